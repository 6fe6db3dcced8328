/**
 * Bind mounts: a staged filesystem into a pod's target path (CSI NodePublishVolume), or a raw
 * block device node onto a file at the target path.
 *
 * A read-only bind mount takes two steps: the kernel ignores MS_RDONLY on the initial MS_BIND,
 * so the bind is made first and then remounted with `remount,bind,ro`, which makes only this
 * mount (not the source filesystem) read-only. If the second step fails, the first is undone:
 * a bind that was asked to be read-only must never be left writable.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { SnapblockError } from "../errors/index.js";
import { containingMount, findMount, readMountInfo, type MountInfoOptions } from "./mountinfo.js";
import { assertSafeAbsolutePath } from "./path-safety.js";
import { runCommand, type CommandRunner } from "./run-command.js";

export interface BindMountOptions extends MountInfoOptions {
  source: string;
  target: string;
  readOnly: boolean;
  runner?: CommandRunner;
}

export async function bindMount(options: BindMountOptions): Promise<{ alreadyMounted: boolean }> {
  const source = assertSafeAbsolutePath(options.source, "bind source");
  const target = assertSafeAbsolutePath(options.target, "bind target");
  const run = options.runner ?? runCommand;
  const existing = await findMount(target, options);
  if (existing !== undefined) {
    const expected = await bindIdentity(source, options);
    const readOnly = existing.mountOptions.includes("ro");
    if (
      expected !== undefined &&
      existing.major === expected.major &&
      existing.minor === expected.minor &&
      existing.root === expected.root &&
      readOnly === options.readOnly
    ) {
      return { alreadyMounted: true };
    }
    throw new SnapblockError(
      "ALREADY_EXISTS",
      `${target} already has a ${readOnly ? "read-only" : "read-write"} mount of ${existing.source}:${existing.root}; ` +
        `wanted a ${options.readOnly ? "read-only" : "read-write"} bind of ${source}`,
    );
  }
  await run({ command: "mount", args: ["--bind", "--", source, target], timeoutMs: 60_000 });
  if (options.readOnly) {
    try {
      await run({ command: "mount", args: ["-o", "remount,bind,ro", "--", target], timeoutMs: 60_000 });
    } catch (err) {
      await run({ command: "umount", args: ["--", target], timeoutMs: 60_000 }).catch((undoErr: unknown) => {
        throw new SnapblockError(
          "INTERNAL",
          `making the bind mount at ${target} read-only failed and undoing it failed too; it is WRITABLE: ${String(undoErr)}`,
          { cause: err },
        );
      });
      throw err;
    }
  }
  return { alreadyMounted: false };
}

/**
 * What a bind mount of `source` looks like in mountinfo: the device number of the filesystem
 * holding `source`, and `source`'s path inside that filesystem as root. Undefined when `source`
 * is not reachable (then no existing mount can match it).
 */
async function bindIdentity(
  source: string,
  options: MountInfoOptions,
): Promise<{ major: number; minor: number; root: string } | undefined> {
  let real: string;
  try {
    real = await fs.realpath(source);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new SnapblockError("IO", `could not resolve bind source ${source}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const via = containingMount(await readMountInfo(options), real);
  if (via === undefined) return undefined;
  return {
    major: via.major,
    minor: via.minor,
    root: path.posix.join(via.root, path.posix.relative(via.mountPoint, real)),
  };
}
