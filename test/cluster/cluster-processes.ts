import { spawn } from "node:child_process";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { connectCsi, type CsiClients } from "../../pkg/csi/index.js";
import { waitReady } from "../csi/local-process.js";

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
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export interface StartSnapblockOptions {
  /** Options for the node runtime itself, before the script (the benchmark's `--cpu-prof`). */
  nodeOptions?: string[];
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
