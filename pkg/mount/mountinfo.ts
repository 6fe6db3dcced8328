/**
 * /proc/self/mountinfo, parsed properly (proc(5), "/proc/pid/mountinfo"):
 *
 *   36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
 *   (1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)    (10)         (11)
 *
 * The number of optional fields (7) varies and ends at the "-" separator; paths are escaped by the
 * kernel as octal (`\040` space, `\011` tab, `\012` newline, `\134` backslash). mountinfo rather
 * than /proc/mounts because it carries the device number and the root of bind mounts, which is
 * what tells a bind mount of a device node from a filesystem mounted from that device.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { SnapblockError } from "../errors/index.js";

export interface MountInfoEntry {
  mountId: number;
  parentId: number;
  /** st_dev of the mounted filesystem. */
  major: number;
  minor: number;
  /** Directory of the filesystem that is mounted here ("/" unless this is a bind mount of a subtree). */
  root: string;
  mountPoint: string;
  /** Per-mount options (ro/rw, nosuid...). */
  mountOptions: string[];
  /** Propagation fields such as "shared:1", "master:2". */
  optionalFields: string[];
  fsType: string;
  source: string;
  /** Per-superblock options. */
  superOptions: string[];
}

export interface MountInfoOptions {
  /** Default /proc/self/mountinfo; tests point it elsewhere. */
  mountInfoPath?: string;
}

const DEFAULT_MOUNTINFO = "/proc/self/mountinfo";

export function parseMountInfo(text: string): MountInfoEntry[] {
  const entries: MountInfoEntry[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line === undefined || line.trim() === "") continue;
    entries.push(parseLine(line, i + 1));
  }
  return entries;
}

function parseLine(line: string, lineNumber: number): MountInfoEntry {
  const fields = line.split(" ");
  const separator = fields.indexOf("-", 6);
  const bad = (why: string) =>
    new SnapblockError("INTERNAL", `mountinfo line ${lineNumber} is not understood (${why}): ${line}`);
  if (separator < 0 || fields.length < separator + 4) throw bad("fields missing");
  const [id, parent, devNumbers, root, mountPoint, options] = fields;
  const dev = /^(\d+):(\d+)$/.exec(devNumbers ?? "");
  if (id === undefined || parent === undefined || !dev || root === undefined || mountPoint === undefined) {
    throw bad("bad device number");
  }
  const mountId = Number(id);
  const parentId = Number(parent);
  if (!Number.isInteger(mountId) || !Number.isInteger(parentId)) throw bad("bad mount id");
  return {
    mountId,
    parentId,
    major: Number(dev[1]),
    minor: Number(dev[2]),
    root: unescapeMountField(root),
    mountPoint: unescapeMountField(mountPoint),
    mountOptions: splitOptions(options ?? ""),
    optionalFields: fields.slice(6, separator).filter((f) => f !== ""),
    fsType: unescapeMountField(fields[separator + 1] ?? ""),
    source: unescapeMountField(fields[separator + 2] ?? ""),
    superOptions: splitOptions(fields.slice(separator + 3).join(" ")),
  };
}

/** Undoes the kernel's octal escaping (fs/proc_namespace.c mangle(): space, tab, newline, backslash). */
export function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

function splitOptions(options: string): string[] {
  return options === "" ? [] : options.split(",");
}

export async function readMountInfo(options: MountInfoOptions = {}): Promise<MountInfoEntry[]> {
  const file = options.mountInfoPath ?? DEFAULT_MOUNTINFO;
  try {
    return parseMountInfo(await fs.readFile(file, "utf8"));
  } catch (err) {
    if (err instanceof SnapblockError) throw err;
    throw new SnapblockError("IO", `could not read ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * The mount visible at `mountPoint` (the last one in mountinfo order when mounts are stacked),
 * or undefined. Compares the literal path and, when it resolves, its real path, because mount(8)
 * follows symlinks before mounting. Never stats the mount itself, so a dead FUSE mount
 * ("Transport endpoint is not connected") is still found.
 */
export async function findMount(
  mountPoint: string,
  options: MountInfoOptions = {},
): Promise<MountInfoEntry | undefined> {
  const entries = await readMountInfo(options);
  const candidates = new Set([mountPoint, await realpathIfResolvable(mountPoint)]);
  let found: MountInfoEntry | undefined;
  for (const entry of entries) if (candidates.has(entry.mountPoint)) found = entry;
  return found;
}

export async function isMountPoint(mountPoint: string, options: MountInfoOptions = {}): Promise<boolean> {
  return (await findMount(mountPoint, options)) !== undefined;
}

async function realpathIfResolvable(p: string): Promise<string> {
  try {
    return await fs.realpath(p);
  } catch (err) {
    // Missing path or dead FUSE mount below it: the literal path is all there is to compare.
    if (err instanceof Error) return p;
    throw err;
  }
}

export interface DeviceNumber {
  major: number;
  minor: number;
}

/** Who holds a block device in the mount table. */
export interface DeviceMounts {
  /** Filesystems mounted from the device (its device number is theirs), including their bind mounts. */
  filesystemMounts: MountInfoEntry[];
  /** Bind mounts of the device node itself (raw block volumes published into pods). */
  nodeBindMounts: MountInfoEntry[];
}

/**
 * Pure part of findMountsOfDevice. `node` locates the device node: the filesystem it lives on
 * (devtmpfs, normally) and its path. A bind mount of the node shows that filesystem's device
 * number and, as root, the node's path inside that filesystem.
 */
export function matchDeviceMounts(
  entries: readonly MountInfoEntry[],
  device: DeviceNumber,
  node?: { containingFs: DeviceNumber; path: string },
): DeviceMounts {
  const filesystemMounts = entries.filter((e) => e.major === device.major && e.minor === device.minor);
  const nodeBindMounts: MountInfoEntry[] = [];
  if (node !== undefined) {
    const sameFs = entries.filter(
      (e) => e.major === node.containingFs.major && e.minor === node.containingFs.minor,
    );
    // The mount through which the node's path is reached gives the node's path inside its fs.
    const via = containingMount(sameFs, node.path);
    if (via !== undefined) {
      const inside = path.posix.join(via.root, path.posix.relative(via.mountPoint, node.path));
      for (const e of sameFs) if (e.root === inside) nodeBindMounts.push(e);
    }
  }
  return { filesystemMounts, nodeBindMounts };
}

/** The mount through which `p` is reached: the last-mounted one with the longest mount point prefix. */
export function containingMount(entries: readonly MountInfoEntry[], p: string): MountInfoEntry | undefined {
  let best: MountInfoEntry | undefined;
  for (const e of entries) {
    const within = e.mountPoint === "/" || p === e.mountPoint || p.startsWith(`${e.mountPoint}/`);
    if (within && (best === undefined || e.mountPoint.length >= best.mountPoint.length)) best = e;
  }
  return best;
}

/** Splits a Linux dev_t (new_encode_dev layout) into major and minor. */
export function splitDeviceNumber(dev: bigint): DeviceNumber {
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
  return { major, minor };
}

/** The block device number of a device node; INVALID_ARGUMENT if the path is not a block device. */
export async function blockDeviceNumber(devicePath: string): Promise<DeviceNumber> {
  const stat = await statOrThrow(devicePath);
  if (!stat.isBlockDevice()) {
    throw new SnapblockError("INVALID_ARGUMENT", `${devicePath} is not a block device`);
  }
  return splitDeviceNumber(stat.rdev);
}

/** Every mount that uses `devicePath`, by device number, whatever path the node was reached by. */
export async function findMountsOfDevice(
  devicePath: string,
  options: MountInfoOptions = {},
): Promise<DeviceMounts> {
  const stat = await statOrThrow(devicePath);
  if (!stat.isBlockDevice()) {
    throw new SnapblockError("INVALID_ARGUMENT", `${devicePath} is not a block device`);
  }
  const entries = await readMountInfo(options);
  return matchDeviceMounts(entries, splitDeviceNumber(stat.rdev), {
    containingFs: splitDeviceNumber(stat.dev),
    path: await fs.realpath(devicePath),
  });
}

async function statOrThrow(p: string) {
  try {
    return await fs.stat(p, { bigint: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code === "ENOENT" ? "NOT_FOUND" : "IO";
    throw new SnapblockError(code, `could not stat ${p}: ${(err as Error).message}`, { cause: err });
  }
}
