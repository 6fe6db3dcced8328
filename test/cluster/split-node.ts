/**
 * A node as the chart runs it: `snapblock dataplane` (pool, NBD, block devices, engine service)
 * and `snapblock node --dataplane-socket` (the CSI node plugin) as two processes started from the
 * sources, on loopback with a plaintext engine service. Shared by the tests of their split.
 */
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { connectCsi, type CsiClients } from "../../pkg/csi/index.js";
import { DataPlaneClient } from "../../pkg/dataplane/index.js";
import { RemoteEngine } from "../../pkg/engine-service/index.js";
import { createLogger } from "../../pkg/log/index.js";
import { waitReady } from "../csi/local-process.js";
import { freePort } from "./cluster-processes.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

export interface Child {
  pid: number;
  log: string[];
  exited: Promise<number | null>;
  /** SIGKILL by pid, then wait for the exit. */
  kill(): Promise<void>;
  /** SIGTERM by pid; the exit code. */
  stop(): Promise<number | null>;
}

export function spawnSnapblock(args: string[]): Child {
  const child: ChildProcess = spawn(process.execPath, ["--import", "tsx", "cmd/snapblock.ts", ...args], {
    cwd: ROOT,
    stdio: ["ignore", "ignore", "pipe"],
  });
  const log: string[] = [];
  let buffered = "";
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    buffered += chunk;
    const lines = buffered.split("\n");
    buffered = lines.pop() ?? "";
    log.push(...lines);
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  let gone = false;
  void exited.then(() => (gone = true));
  return {
    pid: child.pid!,
    log,
    exited,
    async kill() {
      if (!gone) process.kill(child.pid!, "SIGKILL");
      await exited;
    },
    async stop() {
      if (!gone) process.kill(child.pid!, "SIGTERM");
      return exited;
    },
  };
}

export interface SplitNode {
  nodeId: string;
  dir: string;
  kubelet: string;
  csiSocket: string;
  dataplaneSocket: string;
  engine: RemoteEngine;
  /** A client of the data plane service, as the node plugin has. */
  dataPlane: DataPlaneClient;
  dataplaneProcess: Child;
  /**
   * Starts the data plane (again); with metricsPort, serving /metrics on 127.0.0.1:metricsPort;
   * attachArgs replace `--attach nbdfuse-loop`.
   */
  startDataPlane(o?: { metricsPort?: number; attachArgs?: string[] }): Promise<Child>;
  /** Starts a node plugin; with `ready`, waits until its Probe says ready. */
  startPlugin(o?: { ready?: boolean }): Promise<{ process: Child; clients: CsiClients }>;
  close(): void;
}

export async function startSplitNode(dir: string, nodeId = "node-a"): Promise<SplitNode> {
  const port = await freePort();
  const dataplaneSocket = path.join(dir, "dataplane", "dataplane.sock");
  const kubelet = path.join(dir, "kubelet");
  const csiSocket = path.join(dir, "csi.sock");
  const dataPlane = new DataPlaneClient({
    socketPath: dataplaneSocket,
    logger: createLogger({ level: "error", write: () => undefined }),
    callTimeoutMs: 60_000,
  });
  const node: SplitNode = {
    nodeId,
    dir,
    kubelet,
    csiSocket,
    dataplaneSocket,
    dataPlane,
    engine: new RemoteEngine({
      nodeId,
      address: `127.0.0.1:${port}`,
      transport: { insecureLoopback: true },
      callTimeoutMs: 60_000,
    }),
    dataplaneProcess: undefined as unknown as Child,
    async startDataPlane(o = {}) {
      const child = spawnSnapblock([
        "dataplane",
        ...["--node-id", nodeId, "--data", path.join(dir, "data"), "--pool-size", "512M"],
        ...["--engine-listen", `127.0.0.1:${port}`, "--insecure-loopback"],
        ...(o.attachArgs ?? ["--attach", "nbdfuse-loop"]),
        ...["--socket", dataplaneSocket, "--log-level", "debug"],
        ...["--metrics-address", o.metricsPort === undefined ? "none" : `127.0.0.1:${o.metricsPort}`],
      ]);
      node.dataplaneProcess = child;
      const deadline = Date.now() + 60_000;
      let gone = false;
      void child.exited.then(() => (gone = true));
      for (;;) {
        if (gone) throw new Error(`snapblock dataplane exited:\n${child.log.join("\n")}`);
        const ready = await dataPlane.info().then(
          (info) => info.ready,
          () => false,
        );
        if (ready) return child;
        if (Date.now() > deadline)
          throw new Error(`snapblock dataplane never got ready:\n${child.log.join("\n")}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async startPlugin(o = {}) {
      const child = spawnSnapblock([
        "node",
        ...["--node-id", nodeId, "--data", path.join(dir, "plugin"), "--dataplane-socket", dataplaneSocket],
        ...["--endpoint", `unix://${csiSocket}`, "--path-root", kubelet],
        ...["--metrics-address", "none", "--log-level", "debug"],
      ]);
      const clients = connectCsi(csiSocket);
      if (o.ready) {
        try {
          await waitReady(clients, { exitCode: null } as ChildProcess, child.exited);
        } catch (err) {
          clients.close();
          await child.kill();
          throw new Error(`the node plugin did not get ready: ${String(err)}\n${child.log.join("\n")}`);
        }
      }
      return { process: child, clients };
    },
    close() {
      dataPlane.close();
      node.engine.close();
    },
  };
  await node.startDataPlane();
  return node;
}
