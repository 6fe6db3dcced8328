/**
 * Unmounting (CSI NodeUnpublishVolume / NodeUnstageVolume), idempotent: a target that is not
 * mounted, or does not exist, is success. Mounts stacked on the same path (a retried publish
 * that raced, say) are all removed. "Target is busy" is BUSY, so the CO retries later rather
 * than seeing an internal error; snapblock never falls back to a lazy unmount, which would hide
 * the busy filesystem while its device is detached underneath it.
 */
import { promises as fs } from "node:fs";
import { SnapblockError } from "../errors/index.js";
import { findMount, type MountInfoOptions } from "./mountinfo.js";
import { assertSafeAbsolutePath } from "./path-safety.js";
import { CommandFailedError, runCommand, type CommandRunner } from "./run-command.js";

export interface UnmountOptions extends MountInfoOptions {
  /** Remove the target afterwards, as removeMountTarget does (only an empty directory or empty file). */
  removeTarget?: boolean;
  runner?: CommandRunner;
}

/** Stacked mounts beyond this on one path mean something keeps mounting there: stop and report. */
const MAX_STACKED = 16;

export async function unmount(target: string, options: UnmountOptions = {}): Promise<void> {
  assertSafeAbsolutePath(target, "unmount target");
  const run = options.runner ?? runCommand;
  for (let i = 0; ; i++) {
    const mount = await findMount(target, options);
    if (mount === undefined) break;
    if (i >= MAX_STACKED) {
      throw new SnapblockError("BUSY", `${target} is still a mount point after ${MAX_STACKED} unmounts`);
    }
    try {
      await run({ command: "umount", args: ["--", target], timeoutMs: 120_000 });
    } catch (err) {
      if (err instanceof CommandFailedError && /busy/i.test(err.result.stderr)) {
        throw new SnapblockError("BUSY", `${target} is busy (a process still uses it); try again later`, {
          cause: err,
        });
      }
      throw err;
    }
  }
  if (options.removeTarget === true) await removeMountTarget(target);
}

/**
 * Removes what the plugin created at a mount target, after unmounting it (CSI spec,
 * NodeUnpublishVolume: "The SP MUST delete the file or directory it created at this path"): an
 * empty directory, or an empty regular file (a raw block target). Anything else found there is
 * not what was created: it is kept, and the answer says why. Never recursive, never a file with
 * content, never a symlink, so no data can be removed through a path that holds something else
 * than expected. A missing path is fine.
 */
export async function removeMountTarget(target: string): Promise<{ removed: boolean; kept?: string }> {
  assertSafeAbsolutePath(target, "mount target");
  try {
    const stat = await fs.lstat(target);
    if (stat.isDirectory()) {
      await fs.rmdir(target);
    } else if (stat.isFile() && stat.size === 0) {
      await fs.unlink(target);
    } else {
      return { removed: false, kept: `${target} is not an empty file or directory` };
    }
    return { removed: true };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return { removed: false };
    if (code === "ENOTEMPTY" || code === "EEXIST") return { removed: false, kept: `${target} is not empty` };
    throw new SnapblockError(
      "IO",
      `could not remove ${target} after unmounting it: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
}

/**
 * Creates the target of a mount if it is missing: a directory for filesystems, an empty file for
 * raw block volumes (a device node can only be bind-mounted onto a non-directory). CSI says the
 * CO creates staging paths and the parent of target paths; the SP creates what the mount needs.
 * An existing target of the right kind is left as it is (it may already carry the mount).
 */
export async function prepareMountTarget(options: {
  path: string;
  kind: "directory" | "file";
}): Promise<void> {
  const target = assertSafeAbsolutePath(options.path, "mount target");
  const existing = await lstatIfExists(target);
  if (existing?.isSymbolicLink()) {
    // mount(8) would follow it: whatever it points to is not what the CO asked to mount at.
    throw new SnapblockError("INVALID_ARGUMENT", `mount target ${target} is a symbolic link`);
  }
  if (existing !== undefined) {
    const isDir = existing.isDirectory();
    if (isDir !== (options.kind === "directory")) {
      throw new SnapblockError(
        "ALREADY_EXISTS",
        `${target} exists and is ${isDir ? "a directory" : "not a directory"}; a ${options.kind} is needed here`,
      );
    }
    return;
  }
  try {
    if (options.kind === "directory") {
      await fs.mkdir(target, { recursive: true, mode: 0o750 });
    } else {
      // "wx": create, and fail rather than open whatever appeared meanwhile.
      const handle = await fs.open(target, "wx", 0o640);
      await handle.close();
    }
  } catch (err) {
    // A component over NAME_MAX is the caller's path, not a fault of the node.
    const code = (err as NodeJS.ErrnoException).code === "ENAMETOOLONG" ? "INVALID_ARGUMENT" : "IO";
    throw new SnapblockError(code, `could not create mount target ${target}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

async function lstatIfExists(p: string) {
  try {
    return await fs.lstat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new SnapblockError("IO", `could not inspect ${p}: ${(err as Error).message}`, { cause: err });
  }
}
