/**
 * Usage figures for CSI NodeGetVolumeStats: bytes and inodes of a mounted filesystem (statfs(2)),
 * or the size of a raw block device (from sysfs, by device number, so it works whatever path the
 * node was reached by, including a bind mount of the node in a pod's directory).
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { SnapblockError } from "../errors/index.js";
import { blockDeviceNumber } from "./mountinfo.js";

export interface FilesystemStats {
  totalBytes: number;
  /** Available to unprivileged users (f_bavail): what a pod can still write. */
  availableBytes: number;
  usedBytes: number;
  totalInodes: number;
  freeInodes: number;
  usedInodes: number;
}

export async function volumeStats(mountPath: string): Promise<FilesystemStats> {
  let s;
  try {
    s = await fs.statfs(mountPath, { bigint: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code === "ENOENT" ? "NOT_FOUND" : "IO";
    throw new SnapblockError(code, `statfs ${mountPath} failed: ${(err as Error).message}`, { cause: err });
  }
  return {
    totalBytes: toNumber(s.blocks * s.bsize),
    availableBytes: toNumber(s.bavail * s.bsize),
    usedBytes: toNumber((s.blocks - s.bfree) * s.bsize),
    totalInodes: toNumber(s.files),
    freeInodes: toNumber(s.ffree),
    usedInodes: toNumber(s.files - s.ffree),
  };
}

/** Size in bytes of a block device, from /sys/dev/block/MAJ:MIN/size (always in 512-byte units). */
export async function blockDeviceSize(
  devicePath: string,
  options: { sysfsRoot?: string } = {},
): Promise<number> {
  const { major, minor } = await blockDeviceNumber(devicePath);
  const file = path.join(options.sysfsRoot ?? "/sys", "dev", "block", `${major}:${minor}`, "size");
  try {
    const sectors = BigInt((await fs.readFile(file, "utf8")).trim());
    return toNumber(sectors * 512n);
  } catch (err) {
    throw new SnapblockError(
      "IO",
      `could not read the size of ${devicePath} from ${file}: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
}

function toNumber(value: bigint): number {
  // Past 2^53 bytes (8 PiB) a JS number loses precision; no node-local volume is that large.
  return Number(value);
}
