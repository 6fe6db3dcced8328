/**
 * Starting nbdfuse (libnbd-bin) so that it outlives the node plugin: a restarted plugin must find
 * the FUSE file still served and the loop device above it still working. So the process is
 * spawned detached (its own session and process group: a signal to the plugin's group does not
 * reach it), with stdio going to a log file in the state directory (not to pipes that would break
 * when the plugin exits), and unref'd.
 *
 * Readiness: `-P PIDFILE` makes nbdfuse write its pid once the FUSE mount is serving (nbdfuse(1)).
 */
import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import path from "node:path";
import { SnapblockError } from "../errors/index.js";
import { describeCommand, findMount, type MountInfoOptions } from "../mount/index.js";
import { sleep } from "../proc/index.js";

export interface NbdfuseLaunch {
  /** MOUNTPOINT/FILENAME: the FUSE mount directory and the name of the one file in it. */
  file: string;
  uri: string;
  readOnly: boolean;
  pidFile: string;
}

export function nbdfuseArgs(launch: NbdfuseLaunch): string[] {
  return ["-P", launch.pidFile, ...(launch.readOnly ? ["-r"] : []), launch.file, launch.uri];
}

export interface StartNbdfuseOptions extends NbdfuseLaunch, MountInfoOptions {
  command: string;
  logPath: string;
  readyTimeoutMs: number;
  /** Called with the pid as soon as the process exists, so it is recorded before we wait on it. */
  onSpawn: (pid: number) => Promise<void>;
}

/** Starts nbdfuse and waits until its file is served; returns the pid. Kills it if it never gets ready. */
export async function startNbdfuse(options: StartNbdfuseOptions): Promise<number> {
  const args = nbdfuseArgs(options);
  const log = await fs.open(options.logPath, "a", 0o600);
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let spawnError: Error | undefined;
  let pid: number | undefined;
  try {
    await log.write(`${new Date().toISOString()} starting ${describeCommand(options.command, args)}\n`);
    const child = spawn(options.command, args, {
      detached: true,
      stdio: ["ignore", log.fd, log.fd],
      env: { ...process.env, LC_ALL: "C" },
    });
    child.once("error", (err) => (spawnError = err));
    child.once("exit", (code, signal) => (exit = { code, signal }));
    child.unref();
    pid = child.pid;
  } finally {
    // The child has its own copy of the descriptor.
    await log.close();
  }
  if (pid === undefined) {
    await sleep(0); // let the "error" event arrive
    throw new SnapblockError(
      "INTERNAL",
      `could not start ${options.command}: ${spawnError?.message ?? "no pid"} (Debian package libnbd-bin)`,
      { cause: spawnError },
    );
  }
  await options.onSpawn(pid);

  const deadline = Date.now() + options.readyTimeoutMs;
  for (;;) {
    if (exit !== undefined) {
      throw new SnapblockError(
        "IO",
        `nbdfuse for ${options.uri} exited (${exit.code ?? exit.signal ?? "?"}) before it was ready: ${await logTail(options.logPath)}`,
      );
    }
    if (await isReady(options, pid)) return pid;
    if (Date.now() > deadline) {
      throw new SnapblockError(
        "IO",
        `nbdfuse for ${options.uri} was not ready after ${options.readyTimeoutMs} ms: ${await logTail(options.logPath)}`,
      );
    }
    await sleep(25);
  }
}

async function isReady(options: StartNbdfuseOptions, pid: number): Promise<boolean> {
  let written: string;
  try {
    written = await fs.readFile(options.pidFile, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw new SnapblockError("IO", `could not read ${options.pidFile}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (written.trim() === "") return false; // written but not yet filled in
  if (Number(written.trim()) !== pid) {
    throw new SnapblockError("INTERNAL", `${options.pidFile} holds pid ${written.trim()}, expected ${pid}`);
  }
  // The pid file is the documented signal; the mount table check makes sure of what we rely on.
  return (await findMount(path.dirname(options.file), options)) !== undefined;
}

/** The end of nbdfuse's log, for error messages (it says why a connection failed). */
export async function logTail(logPath: string): Promise<string> {
  try {
    const text = (await fs.readFile(logPath, "utf8")).trim();
    return text.length > 800 ? `...${text.slice(-800)}` : text || "(no output)";
  } catch (err) {
    return `(could not read ${logPath}: ${(err as Error).message})`;
  }
}
