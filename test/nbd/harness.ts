/**
 * Shared plumbing of the NBD process tests: temp dirs, a server on a temp unix socket over the
 * memory backend, and running real client programs asynchronously (the server lives in the
 * test process, so a synchronous spawn would deadlock it).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants as fsConstants, promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  NbdServer,
  type NbdExportInfo,
  type NbdExportOptions,
  type NbdLimits,
  type NbdObserver,
} from "../../pkg/nbd/index.js";
import { MemoryBackend, type MemoryBackendOptions } from "./memory-backend.js";
import { silentLogger, type Logger } from "../../pkg/log/index.js";

export async function makeTempDir(prefix = "snapblock-nbd-"): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), prefix));
}

export interface TestExport {
  server: NbdServer;
  backend: MemoryBackend;
  dir: string;
  socketPath: string;
  info: NbdExportInfo;
  /** nbd+unix:///NAME?socket=PATH */
  uri: string;
  cleanup(): Promise<void>;
}

export interface ServeOptions extends Partial<MemoryBackendOptions> {
  limits?: Partial<NbdLimits>;
  observer?: NbdObserver;
  logger?: Logger;
  exportOptions?: Partial<NbdExportOptions>;
}

/** A server with one memory-backed export on a socket in a fresh temp dir. */
export async function serveMemory(options: ServeOptions = {}): Promise<TestExport> {
  const dir = await makeTempDir();
  const socketPath = path.join(dir, "nbd.sock");
  const backend = new MemoryBackend({ name: "vol", size: 64 * 1024 * 1024, ...options });
  const server = new NbdServer({
    logger: options.logger ?? silentLogger,
    ...(options.limits === undefined ? {} : { limits: options.limits }),
    ...(options.observer === undefined ? {} : { observer: options.observer }),
  });
  const info = await server.startExport({ backend, listen: { socketPath }, ...options.exportOptions });
  return {
    server,
    backend,
    dir,
    socketPath,
    info,
    uri: info.uri,
    async cleanup() {
      await server.shutdown();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

const started = new Set<ChildProcess>();
const OUTPUT_CAP = 4 * 1024 * 1024;

/** Runs a program without blocking the event loop; kills it (by pid) if it outlives the timeout. */
export function run(
  command: string,
  args: readonly string[],
  options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: options.env ?? process.env,
    });
    started.add(child);
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    child.stdout.on("data", (d: Buffer) => {
      if (stdout.length < OUTPUT_CAP) stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      if (stderr.length < OUTPUT_CAP) stderr += d.toString();
    });
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid !== undefined) process.kill(child.pid, "SIGKILL");
    }, options.timeoutMs ?? 60_000);
    child.once("error", (err) => {
      clearTimeout(timer);
      started.delete(child);
      reject(err);
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      started.delete(child);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
}

/** Like run(), but rejects with the program's output when it fails. */
export async function runOk(
  command: string,
  args: readonly string[],
  options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<RunResult> {
  const result = await run(command, args, options);
  if (result.code !== 0) {
    throw new Error(
      `${command} ${args.join(" ")} failed (code ${result.code}, signal ${result.signal}, timedOut ${result.timedOut}):\n` +
        `${result.stdout}\n${result.stderr}`,
    );
  }
  return result;
}

/** Starts a long-running program (nbdfuse) and returns it; stop it with stopProcess(). */
export function startProcess(
  command: string,
  args: readonly string[],
): ChildProcess & { output: () => string } {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  started.add(child);
  let output = "";
  child.stdout?.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (output += d.toString()));
  child.once("close", () => started.delete(child));
  return Object.assign(child, { output: () => output });
}

/** Waits for a process we started to exit, escalating to SIGKILL after `graceMs`. */
export async function stopProcess(child: ChildProcess, graceMs = 5_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("close", () => resolve()));
  const timer = setTimeout(() => {
    if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, "SIGKILL");
  }, graceMs);
  if (child.pid !== undefined) process.kill(child.pid, "SIGTERM");
  await exited;
  clearTimeout(timer);
}

/** Kills whatever this test process started and is still running (afterAll safety net). */
export function killStartedProcesses(): void {
  for (const child of started) {
    if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, "SIGKILL");
  }
  started.clear();
}

export function commandExists(name: string): boolean {
  return (process.env.PATH ?? "").split(":").some((dir) => isExecutable(path.join(dir, name)));
}

function isExecutable(file: string): boolean {
  try {
    accessSync(file, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The commands that are missing, for skip messages. */
export function missingCommands(names: readonly string[]): string[] {
  return names.filter((name) => !commandExists(name));
}

/** Deterministic pseudo-random bytes (xorshift), so failures reproduce. */
export function patternBuffer(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i += 1) {
    if (i % 4 === 0) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
    }
    out[i] = (x >>> ((i % 4) * 8)) & 0xff;
  }
  return out;
}

/**
 * Runs fio with `args` plus crc32c verification of everything written (fio writes, then reads back
 * and checks every block) and JSON output; returns each job's bytes written, after checking that no
 * job reported an error and that every job read back (and verified) all it wrote.
 */
export async function fioVerified(
  args: readonly string[],
  timeoutMs: number,
): Promise<Array<{ written: number }>> {
  const result = await runOk(
    "fio",
    [
      ...args,
      "--verify=crc32c",
      "--do_verify=1",
      "--verify_fatal=1",
      "--verify_state_save=0", // no state file left in the working directory
      "--output-format=json",
    ],
    { timeoutMs },
  );
  const report = JSON.parse(result.stdout.slice(result.stdout.indexOf("{"))) as {
    jobs: Array<{ error: number; write: { io_bytes: number }; read: { io_bytes: number } }>;
  };
  return report.jobs.map((job) => {
    if (job.error !== 0) throw new Error(`fio job failed with error ${job.error}`);
    if (job.read.io_bytes !== job.write.io_bytes) {
      throw new Error(`fio verified ${job.read.io_bytes} of the ${job.write.io_bytes} bytes it wrote`);
    }
    return { written: job.write.io_bytes };
  });
}

export async function sleep(ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms));
}
