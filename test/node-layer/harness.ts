/**
 * Shared plumbing of the node-layer tests: a real NBD server (nbdkit, not our own, which is being
 * built alongside), temp dirs, and a scrubber that removes every mount, loop device and process a
 * test made under its temp dir even when the test failed halfway - matched by the unique temp dir
 * path, signalled by pid.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { listLoopDevices } from "../../pkg/attach/index.js";
import { findExecutable, readMountInfo, runCommand } from "../../pkg/mount/index.js";

export const MiB = 1024 * 1024;

const TOOLS = [
  ["nbdkit", "nbdkit"],
  ["nbdinfo", "libnbd-bin"],
  ["nbdfuse", "libnbd-bin"],
  ["fusermount3", "fuse3"],
  ["losetup", "mount"],
  ["mount", "mount"],
  ["blkid", "util-linux"],
  ["mkfs.ext4", "e2fsprogs"],
  ["resize2fs", "e2fsprogs"],
  ["e2fsck", "e2fsprogs"],
  ["mkfs.xfs", "xfsprogs"],
  ["xfs_growfs", "xfsprogs"],
  ["xfs_repair", "xfsprogs"],
] as const;

/** Why these tests cannot run here, or undefined. Computed once per test file. */
export async function skipReason(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return "not running as root (mounts and loop devices need it)";
  if (!existsSync("/dev/fuse")) return "/dev/fuse is missing (no FUSE in this kernel or container)";
  if (!existsSync("/dev/loop-control")) return "/dev/loop-control is missing (no loop driver)";
  const missing: string[] = [];
  for (const [tool, pkg] of TOOLS)
    if ((await findExecutable(tool)) === undefined) missing.push(`${tool} (${pkg})`);
  return missing.length > 0 ? `missing ${missing.join(", ")}` : undefined;
}

/**
 * Whether this process has CAP_SYS_RESOURCE (bit 24 of CapEff), which ext4 online resize needs.
 * Sandboxes and trimmed containers often drop it while keeping CAP_SYS_ADMIN.
 */
export async function hasCapSysResource(): Promise<boolean> {
  const status = await fs.readFile("/proc/self/status", "utf8");
  const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
  return hex !== undefined && (BigInt(`0x${hex}`) & (1n << 24n)) !== 0n;
}

export async function makeTempDir(): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), "snapblock-node-"));
}

export interface Nbdkit {
  socketPath: string;
  process: ChildProcess;
  stop(): Promise<void>;
  /** SIGKILL: the server vanishes under its clients, as a crashed node plugin's server would. */
  crash(): Promise<void>;
}

/**
 * nbdkit in the foreground (-f) on a unix socket, killed with the test process at the latest
 * (--exit-with-parent). `plugin` is e.g. ["memory", "256M"] or ["file", "/path/img"].
 */
export async function startNbdkit(
  dir: string,
  plugin: readonly string[],
  name = "nbd.sock",
): Promise<Nbdkit> {
  const socketPath = path.join(dir, name);
  const child = spawn("nbdkit", ["-f", "--exit-with-parent", "-U", socketPath, ...plugin], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  const deadline = Date.now() + 10_000;
  while (!existsSync(socketPath)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`nbdkit ${plugin.join(" ")} did not start: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    socketPath,
    process: child,
    /** SIGTERM, and SIGKILL after 3 s: nbdkit waits for its clients, which a failed test may have left. */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 3_000);
      await exited;
      clearTimeout(timer);
    },
    async crash() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await exited;
    },
  };
}

/** What is left under `dir`: mounts, loop devices over files there, live processes naming it. */
export async function leftoversUnder(
  dir: string,
): Promise<{ mounts: string[]; loops: string[]; pids: number[] }> {
  const mounts = (await readMountInfo())
    .filter((m) => m.mountPoint.startsWith(`${dir}/`))
    .map((m) => m.mountPoint);
  const loops = (await listLoopDevices()).filter((l) => l.backFile.startsWith(`${dir}/`)).map((l) => l.name);
  const pids: number[] = [];
  for (const name of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const argv = await fs.readFile(`/proc/${name}/cmdline`, "utf8").catch(() => "");
    const stat = await fs.readFile(`/proc/${name}/stat`, "utf8").catch(() => "");
    const zombie = / [ZX] /.test(stat.slice(stat.lastIndexOf(")")));
    if (!zombie && argv.split("\0").some((arg) => arg.includes(dir))) pids.push(Number(name));
  }
  return { mounts, loops, pids };
}

/**
 * Removes everything a test made under `dir`, in dependency order: frozen filesystems thawed,
 * mounts (deepest first, lazily if a normal unmount fails, since this only runs after a failure),
 * loop devices, processes (by pid, SIGKILL), then the directory. Errors are collected and thrown together at the end.
 */
export async function scrub(dir: string): Promise<void> {
  const errors: string[] = [];
  const note = (what: string) => (err: unknown) => errors.push(`${what}: ${String(err)}`);
  const unmountAll = async (which: (fsType: string) => boolean) => {
    const mounts = (await readMountInfo()).filter(
      (m) => m.mountPoint.startsWith(`${dir}/`) && which(m.fsType),
    );
    for (const mount of mounts.map((m) => m.mountPoint).sort((a, b) => b.length - a.length)) {
      await runCommand({ command: "umount", args: [mount] }).catch(() =>
        runCommand({ command: "umount", args: ["-l", mount] }).catch(note(`umount ${mount}`)),
      );
    }
  };
  // A test that failed between a freeze and its thaw leaves a frozen filesystem: writes to it
  // (and an unmount's sync) would wait for ever. Thawing one that is not frozen fails: ignored.
  for (const m of await readMountInfo()) {
    if (m.mountPoint.startsWith(`${dir}/`) && !m.fsType.startsWith("fuse"))
      await runCommand({
        command: "fsfreeze",
        args: ["--unfreeze", m.mountPoint],
        acceptExitCodes: [1],
      }).catch(() => undefined);
  }
  // Filesystems on the loop devices first, then the loop devices, then the FUSE mounts under them.
  await unmountAll((fsType) => !fsType.startsWith("fuse"));
  let left = await leftoversUnder(dir);
  for (const loop of left.loops)
    await runCommand({ command: "losetup", args: ["-d", loop] }).catch(note(loop));
  await unmountAll(() => true);
  left = await leftoversUnder(dir);
  for (const pid of left.pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch (err) {
      note(`kill ${pid}`)(err);
    }
  }
  await fs.rm(dir, { recursive: true, force: true }).catch(note(`rm ${dir}`));
  if (errors.length > 0) throw new Error(`cleanup of ${dir} left things behind: ${errors.join("; ")}`);
}

/** Deterministic bytes, so that what is read back can be compared with what was written. */
export function pattern(size: number, seed: number): Buffer {
  const buf = Buffer.alloc(size);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    buf[i] = x >>> 24;
  }
  return buf;
}

export async function expectErrno(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
    return undefined;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code;
  }
}
