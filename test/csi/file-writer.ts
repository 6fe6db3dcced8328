/**
 * A file-writing load, as an application would make it: a child process that creates files
 * DIR/w-<n> (n = 1, 2, ...), each with content only n determines, appends "n" to DIR/log.txt, makes
 * both durable (fsync of the files and of the directory) and only then prints n: every n printed
 * is acknowledged, and must be in any snapshot taken after it was printed.
 *
 *   node --import tsx test/csi/file-writer.ts DIR
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, writeSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** 4 to 20 KiB, a header naming n, then bytes from a generator seeded by n. */
export function fileContent(n: number): Buffer {
  const buf = Buffer.alloc(4096 * (1 + (n % 5)));
  let x = (n * 2654435761 + 7) >>> 0;
  for (let i = 0; i < buf.length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    buf[i] = x >>> 24;
  }
  buf.write(`file ${n}\n`);
  return buf;
}

function durable(file: string, write: (fd: number) => void, flags: string): void {
  const fd = openSync(file, flags);
  try {
    write(fd);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function writeForever(dir: string): void {
  const log = path.join(dir, "log.txt");
  for (let n = 1; ; n++) {
    durable(path.join(dir, `w-${n}`), (fd) => writeSync(fd, fileContent(n)), "w");
    durable(log, (fd) => writeSync(fd, `${n}\n`), "a");
    durable(dir, () => undefined, "r");
    process.stdout.write(`${n}\n`);
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const dir = process.argv[2];
  if (!dir) throw new Error("usage: file-writer.ts DIR");
  writeForever(dir);
}

/** The writer running in a child process, and what it has acknowledged so far. */
export interface FileWriter {
  /** The highest n acknowledged (0 before the first). */
  acked(): number;
  /** Resolves once n is acknowledged (rejects if the writer dies or timeoutMs passes). */
  waitFor(n: number, timeoutMs?: number): Promise<void>;
  /** SIGKILL by pid, then wait for the exit. */
  stop(): Promise<void>;
}

export function startFileWriter(dir: string): FileWriter {
  const child: ChildProcess = spawn(
    process.execPath,
    ["--import", "tsx", path.join(ROOT, "test/csi/file-writer.ts"), dir],
    { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
  );
  let acked = 0;
  let stderr = "";
  let exited = false;
  let buffered = "";
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
    buffered += chunk;
    const lines = buffered.split("\n");
    buffered = lines.pop() ?? "";
    for (const line of lines) acked = Math.max(acked, Number(line));
  });
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  const exit = new Promise<void>((resolve) =>
    child.once("exit", () => {
      exited = true;
      resolve();
    }),
  );
  return {
    acked: () => acked,
    async waitFor(n, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      while (acked < n) {
        if (exited) throw new Error(`the file writer exited: ${stderr}`);
        if (Date.now() > deadline)
          throw new Error(`the file writer acknowledged ${acked}, not ${n}, within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    async stop() {
      if (!exited) process.kill(child.pid!, "SIGKILL");
      await exit;
    },
  };
}

/**
 * Problems of a copy of the writer's directory that must hold every file up to n: missing or
 * different files, and a log.txt that does not start with 1..n.
 */
export function missingWrites(dir: string, n: number): string[] {
  const problems: string[] = [];
  for (let i = 1; i <= n; i++) {
    const file = path.join(dir, `w-${i}`);
    if (!existsSync(file)) problems.push(`w-${i} is missing`);
    else if (!readFileSync(file).equals(fileContent(i))) problems.push(`w-${i} has other content`);
  }
  const log = existsSync(path.join(dir, "log.txt")) ? readFileSync(path.join(dir, "log.txt"), "utf8") : "";
  const lines = log.split("\n").slice(0, n);
  lines.forEach((line, i) => {
    if (line !== String(i + 1)) problems.push(`log.txt line ${i + 1} is ${JSON.stringify(line)}`);
  });
  if (lines.length < n) problems.push(`log.txt has ${lines.length} lines, not ${n}`);
  return problems;
}
