import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { cpuSeconds } from "./process-cpu.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/** Certificate files of one side (the same files a node uses). */
export interface TlsFiles {
  caFile: string;
  certFile: string;
  keyFile: string;
}

export interface TlsCopyResult {
  bytes: number;
  seconds: number;
  /** The TLS version the connection used (TLSv1.3 expected). */
  protocol: string;
  /** CPU seconds (user + system) of the receiving and the sending process during the copy. */
  fetchCpu: number;
  serveCpu: number;
}

/**
 * One run of bench/tls-copy.ts: a serving and a fetching Node.js process with the given
 * certificates, `bytes` copied in `messageBytes` messages over mutual TLS on loopback. CPU time is
 * read from /proc before the copy starts (both processes are up and idle) and after it ends, so
 * process start-up and tsx's compile are not counted.
 */
export async function runTlsCopy(o: {
  server: TlsFiles;
  client: TlsFiles;
  bytes: number;
  messageBytes: number;
  /** A plain copy: the receiver writes what arrives to this file (see bench/tls-copy.ts). */
  toFile?: { path: string; syncEvery: number };
}): Promise<TlsCopyResult> {
  const script = path.join("bench", "tls-copy.ts");
  const files = (f: TlsFiles) => [f.caFile, f.certFile, f.keyFile];
  const serve = start([script, "serve", ...files(o.server)]);
  try {
    const { port } = (await serve.next()) as { port: number };
    const fetch = start([
      ...[script, "fetch", ...files(o.client)],
      ...[String(port), String(o.bytes), String(o.messageBytes)],
      ...(o.toFile ? [o.toFile.path, String(o.toFile.syncEvery)] : []),
    ]);
    try {
      await fetch.next(); // {"ready":true}
      const before = { fetch: cpuSeconds(fetch.pid), serve: cpuSeconds(serve.pid) };
      fetch.child.stdin!.write("go\n");
      const done = (await fetch.next()) as { bytes: number; seconds: number; protocol: string };
      const after = { fetch: cpuSeconds(fetch.pid), serve: cpuSeconds(serve.pid) };
      if (done.bytes !== o.bytes) throw new Error(`tls-copy received ${done.bytes} of ${o.bytes} bytes`);
      return {
        ...done,
        fetchCpu: after.fetch - before.fetch,
        serveCpu: after.serve - before.serve,
      };
    } finally {
      await fetch.stop();
    }
  } finally {
    await serve.stop();
  }
}

interface LineProcess {
  child: ChildProcess;
  pid: number;
  /** The next JSON line the process prints on stdout. */
  next(): Promise<unknown>;
  /** SIGTERM (by pid), then wait for the exit. */
  stop(): Promise<void>;
}

function start(args: string[]): LineProcess {
  const child = spawn(process.execPath, ["--import", "tsx", ...args], {
    cwd: ROOT,
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  return {
    child,
    pid: child.pid!,
    async next() {
      const line = await Promise.race([
        lines.next(),
        exited.then(() => ({ done: true as const, value: undefined })),
      ]);
      if (line.done || line.value === undefined) {
        throw new Error(`tls-copy ${args[1]} ended without answering: ${stderr}`);
      }
      return JSON.parse(line.value) as unknown;
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, "SIGTERM");
      await exited;
    },
  };
}
