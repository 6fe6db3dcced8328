/**
 * Just enough of /proc to manage the nbdfuse processes the node starts and to judge a pool lock's
 * owner: is a pid still ours (a pid can be reused after a reboot or a long time, so its command
 * line is checked before any signal is sent), is it alive (a zombie is not), and which processes
 * serve a given FUSE file.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { SnapblockError } from "../errors/index.js";

export interface ProcessInfo {
  pid: number;
  /** Single-letter state from /proc/PID/stat: R, S, D, Z (zombie), X (dead), ... */
  state: string;
  argv: string[];
}

export interface ProcOptions {
  procRoot?: string;
}

export async function readProcess(pid: number, options: ProcOptions = {}): Promise<ProcessInfo | undefined> {
  const dir = path.join(options.procRoot ?? "/proc", String(pid));
  try {
    const stat = await fs.readFile(path.join(dir, "stat"), "utf8");
    // "pid (comm) S ...": comm may hold spaces and parentheses, so split after the last ")".
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    const cmdline = await fs.readFile(path.join(dir, "cmdline"), "utf8");
    const argv = cmdline.split("\0");
    if (argv[argv.length - 1] === "") argv.pop();
    return { pid, state, argv };
  } catch (err) {
    // The process ended (or ended between the two reads).
    if (["ENOENT", "ESRCH"].includes((err as NodeJS.ErrnoException).code ?? "")) return undefined;
    throw new SnapblockError("IO", `could not read ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

export function isLive(info: ProcessInfo | undefined): info is ProcessInfo {
  return info !== undefined && info.state !== "Z" && info.state !== "X";
}

/** Live processes whose command line contains `argument` exactly as one of its words. */
export async function findProcessesWithArgument(
  argument: string,
  options: ProcOptions = {},
): Promise<ProcessInfo[]> {
  const procRoot = options.procRoot ?? "/proc";
  let names: string[];
  try {
    names = await fs.readdir(procRoot);
  } catch (err) {
    throw new SnapblockError("IO", `could not list ${procRoot}: ${(err as Error).message}`, { cause: err });
  }
  const found: ProcessInfo[] = [];
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    const info = await readProcess(Number(name), options);
    if (isLive(info) && info.argv.includes(argument)) found.push(info);
  }
  return found;
}

/**
 * Waits up to `graceMs` for a process to end by itself, then sends SIGTERM, then SIGKILL. Only
 * signals it while `isOurs` still holds for what /proc shows under that pid.
 */
export async function stopProcess(options: {
  pid: number;
  isOurs: (info: ProcessInfo) => boolean;
  graceMs: number;
  procOptions?: ProcOptions;
}): Promise<void> {
  const { pid, isOurs, graceMs } = options;
  const ours = async () => {
    const info = await readProcess(pid, options.procOptions);
    return isLive(info) && isOurs(info);
  };
  for (const signal of [undefined, "SIGTERM", "SIGKILL"] as const) {
    if (!(await ours())) return;
    if (signal !== undefined) {
      try {
        process.kill(pid, signal);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ESRCH") return;
        throw new SnapblockError(
          "INTERNAL",
          `could not send ${signal} to process ${pid}: ${(err as Error).message}`,
          {
            cause: err,
          },
        );
      }
    }
    const deadline = Date.now() + graceMs;
    while (Date.now() < deadline) {
      if (!(await ours())) return;
      await sleep(25);
    }
  }
  if (await ours()) throw new SnapblockError("BUSY", `process ${pid} did not exit after SIGKILL`);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
