import { spawn } from "node:child_process";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { connectCsi, type CsiClients } from "../../pkg/csi/index.js";
import { waitReady } from "../csi/local-process.js";
import type { TestPki } from "./test-certs.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** One snapblock process (`node` or `controller`) started from the sources. */
export interface SnapblockProcess {
  pid: number;
  socketPath: string;
  clients: CsiClients;
  log: string[];
  /** SIGKILL by pid (a crash), then wait for the exit. */
  kill(): Promise<void>;
  /** SIGTERM, then wait for the exit code. */
  stop(): Promise<number | null>;
}

/** A free TCP port on loopback (the node's engine port must be known before it starts). */
export async function freePort(): Promise<number> {
  // A port found with listen(0) and released is free only until someone else gets it: the test
  // files run in parallel, and once a controller's metrics port was bound by another file's
  // process first (the scrape read that process's /metrics). So ports come from outside the
  // kernel's ephemeral range (32768-60999 by default), from a block of 1000 per vitest worker,
  // and never twice from one process.
  const worker = Number(process.env.VITEST_POOL_ID ?? 0) % 12;
  const base = 20_000 + worker * 1000;
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = base + Math.floor(Math.random() * 1000);
    if (handedOut.has(port) || !(await bindable(port))) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error(`no free port found between ${base} and ${base + 999}`);
}

const handedOut = new Set<number>();

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

export interface StartSnapblockOptions {
  /** Options for the node runtime itself, before the script (the benchmark's `--cpu-prof`). */
  nodeOptions?: string[];
  /** Variables added to the environment (KUBECONFIG of a fake API server). */
  env?: Record<string, string>;
}

/**
 * Starts `node --import tsx cmd/snapblock.ts <args>` and waits until the CSI socket's Probe says
 * ready, as the CO (or the kubelet's registrar) would.
 */
export async function startSnapblock(
  args: string[],
  socketPath: string,
  options: StartSnapblockOptions = {},
): Promise<SnapblockProcess> {
  const runtime = [...(options.nodeOptions ?? []), "--import", "tsx", "cmd/snapblock.ts"];
  const child = spawn(process.execPath, [...runtime, ...args], {
    cwd: ROOT,
    stdio: ["ignore", "ignore", "pipe"],
    ...(options.env ? { env: { ...process.env, ...options.env } } : {}),
  });
  const log: string[] = [];
  let buffered = "";
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    buffered += chunk;
    const lines = buffered.split("\n");
    buffered = lines.pop() ?? "";
    log.push(...lines);
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const clients = connectCsi(socketPath);
  try {
    await waitReady(clients, child, exited);
  } catch (err) {
    clients.close();
    child.kill("SIGKILL");
    throw new Error(`snapblock ${args[0]} did not become ready: ${String(err)}\n${log.join("\n")}`);
  }
  return {
    pid: child.pid!,
    socketPath,
    clients,
    log,
    kill: async () => {
      clients.close();
      process.kill(child.pid!, "SIGKILL");
      await exited;
    },
    stop: async () => {
      clients.close();
      process.kill(child.pid!, "SIGTERM");
      return exited;
    },
  };
}

/** Where a test cluster lives: its directory, certificates and each node's engine port on loopback. */
export interface TestCluster {
  dir: string;
  pki: TestPki;
  ports: ReadonlyMap<string, number>;
}

export interface NodeArgsOptions {
  /** --attach (default none: no Node data path). */
  attach?: "none" | "auto" | "nbdfuse-loop";
  poolSize?: string;
  /** --metrics-address (default none). */
  metricsAddress?: string;
  /** Flags of this test only. */
  extra?: string[];
}

/**
 * `snapblock node` as the tests run it: data under DIR/NODE, its engine on its loopback port with
 * its own certificate, debug logs, staging and target paths under DIR/kubelet when it attaches.
 * Its CSI socket is DIR/NODE/csi.sock (nodeSocket).
 */
export function nodeArgs(c: TestCluster, node: string, o: NodeArgsOptions = {}): string[] {
  const attach = o.attach ?? "none";
  return [
    "node",
    ...["--node-id", node, "--data", path.join(c.dir, node), "--pool-size", o.poolSize ?? "256M"],
    ...["--attach", attach, "--engine-listen", `127.0.0.1:${c.ports.get(node)}`],
    ...["--metrics-address", o.metricsAddress ?? "none", "--log-level", "debug"],
    ...["--tls-ca", c.pki.node(node).caFile, "--tls-cert", c.pki.node(node).certFile],
    ...["--tls-key", c.pki.node(node).keyFile],
    ...(attach === "none" ? [] : ["--path-root", path.join(c.dir, "kubelet")]),
    ...(o.extra ?? []),
  ];
}

export function nodeSocket(c: TestCluster, node: string): string {
  return path.join(c.dir, node, "csi.sock");
}

export interface ControllerArgsOptions {
  /** The nodes it knows (default: every node with a port). */
  nodes?: readonly string[];
  /** --call-timeout in seconds (default 5). */
  callTimeoutSeconds?: number;
  /** --metrics-address (default none). */
  metricsAddress?: string;
  extra?: string[];
}

/**
 * `snapblock controller` over every node of the cluster (a static --nodes list of their loopback
 * engine ports) with the controller's certificate. Its CSI socket is DIR/controller.sock
 * (controllerSocket).
 */
export function controllerArgs(c: TestCluster, o: ControllerArgsOptions = {}): string[] {
  return [
    "controller",
    ...["--endpoint", `unix://${controllerSocket(c)}`, "--log-level", "debug"],
    ...["--nodes", (o.nodes ?? [...c.ports.keys()]).map((n) => `${n}=127.0.0.1:${c.ports.get(n)}`).join(",")],
    ...["--tls-ca", c.pki.controller.caFile, "--tls-cert", c.pki.controller.certFile],
    ...["--tls-key", c.pki.controller.keyFile, "--call-timeout", String(o.callTimeoutSeconds ?? 5)],
    ...["--metrics-address", o.metricsAddress ?? "none"],
    ...(o.extra ?? []),
  ];
}

export function controllerSocket(c: TestCluster): string {
  return path.join(c.dir, "controller.sock");
}
