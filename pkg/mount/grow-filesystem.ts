/**
 * Online filesystem growth (CSI NodeExpandVolume), after the block device under a mounted
 * filesystem has grown. Both tools work on a mounted filesystem: resize2fs asks the kernel
 * (EXT4_IOC_RESIZE_FS) when it sees the device mounted; xfs_growfs can only work on a mounted
 * filesystem and takes the mount point, not the device. ext4 online resize also needs
 * CAP_SYS_RESOURCE in the node plugin (xfs needs only CAP_SYS_ADMIN, which mounting needs anyway).
 */
import { SnapblockError } from "../errors/index.js";
import type { FilesystemType } from "./make-filesystem.js";
import { blockDeviceNumber, findMount, type MountInfoOptions } from "./mountinfo.js";
import { assertSafeAbsolutePath } from "./path-safety.js";
import { CommandFailedError, runCommand, type CommandRunner } from "./run-command.js";

export interface GrowFilesystemOptions extends MountInfoOptions {
  device: string;
  /** Where the filesystem on `device` is mounted (the staging path). */
  mountPath: string;
  fsType: FilesystemType;
  runner?: CommandRunner;
}

/** Grows the filesystem to fill its device; a filesystem that already fills it is left alone. */
export async function growFilesystem(options: GrowFilesystemOptions): Promise<void> {
  const device = assertSafeAbsolutePath(options.device, "device");
  const mountPath = assertSafeAbsolutePath(options.mountPath, "mount path");
  const run = options.runner ?? runCommand;
  const mount = await findMount(mountPath, options);
  const number = await blockDeviceNumber(device);
  if (mount === undefined || mount.major !== number.major || mount.minor !== number.minor) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `${device} is not mounted at ${mountPath}; snapblock grows filesystems online only (stage the volume first)`,
    );
  }
  if (mount.fsType !== options.fsType) {
    throw new SnapblockError("INVALID_ARGUMENT", `${mountPath} holds ${mount.fsType}, not ${options.fsType}`);
  }
  switch (options.fsType) {
    case "ext4":
      try {
        await run({ command: "resize2fs", args: [device], timeoutMs: 600_000 });
      } catch (err) {
        // EXT4_IOC_RESIZE_FS needs CAP_SYS_RESOURCE (fs/ext4/resize.c ext4_resize_begin), which
        // an unprivileged or capability-trimmed node plugin container lacks.
        if (err instanceof CommandFailedError && /Permission denied to resize/.test(err.result.stderr)) {
          throw new SnapblockError(
            "INTERNAL",
            `resize2fs ${device}: the kernel refused the online resize; the node plugin needs CAP_SYS_RESOURCE`,
            { cause: err },
          );
        }
        throw err;
      }
      return;
    case "xfs":
      await run({ command: "xfs_growfs", args: ["-d", mountPath], timeoutMs: 600_000 });
      return;
  }
}
