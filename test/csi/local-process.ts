import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { callCsi, connectCsi, type CsiClients } from "../../pkg/csi/index.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

export interface LocalProcess {
  dataDir: string;
  socketPath: string;
  clients: CsiClients;
  /** Log lines the process wrote (stderr). */
  log: string[];
  /** SIGTERM, then wait for the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL by pid (a crash), then wait. */
  kill(): Promise<void>;
}

export interface StartOptions {
  /** Reuse a data directory (restart tests). */
  dataDir?: string;
  args?: string[];
}

/**
 * Starts the real binary in local mode (`node --import tsx cmd/snapblock.ts local`) on a
 * temporary socket and waits until Probe reports ready, as a CO would.
 */
export async function startLocal(options: StartOptions = {}): Promise<LocalProcess> {
  const dataDir = options.dataDir ?? mkdtempSync(path.join(tmpdir(), "snapblock-csi-"));
  const socketPath = path.join(dataDir, "csi.sock");
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      "cmd/snapblock.ts",
      "local",
      "--data",
      dataDir,
      "--pool-size",
      "512M",
      "--overcommit",
      "8",
      "--log-level",
      "debug",
      ...(options.args ?? []),
    ],
    { cwd: ROOT, stdio: ["ignore", "ignore", "pipe"] },
  );
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
    throw new Error(`snapblock local did not become ready: ${String(err)}\n${log.join("\n")}`);
  }
  return {
    dataDir,
    socketPath,
    clients,
    log,
    stop: async () => {
      clients.close();
      process.kill(child.pid!, "SIGTERM");
      return exited;
    },
    kill: async () => {
      clients.close();
      process.kill(child.pid!, "SIGKILL");
      await exited;
    },
  };
}

/** Polls Identity.Probe until the process says ready (or exits, or 30 s pass). */
export async function waitReady(
  clients: CsiClients,
  child: ChildProcess,
  exited: Promise<number | null>,
): Promise<void> {
  let done = false;
  void exited.then(() => (done = true));
  // Generous: on a loaded 2-core machine tsx alone can take many seconds to start the binary.
  const deadline = Date.now() + 60_000;
  let last: unknown = "Probe never answered";
  while (Date.now() < deadline) {
    if (done) throw new Error(`exited with code ${child.exitCode}`);
    try {
      const res = await callCsi<{ ready: { value: boolean } | null }>(clients.identity, "Probe", {}, 1000);
      if (res.ready?.value) return;
      last = "Probe answered ready=false";
    } catch (err) {
      last = err; // not listening yet: keep polling
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for Probe ready (last: ${String(last)})`);
}

export function removeDataDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** Resolves with the gRPC status code of a call that must fail. */
export async function failureCode(promise: Promise<unknown>): Promise<{ code: number; details: string }> {
  try {
    await promise;
  } catch (err) {
    const e = err as { code?: number; details?: string };
    return { code: e.code ?? -1, details: e.details ?? String(err) };
  }
  throw new Error("the call succeeded but was expected to fail");
}
