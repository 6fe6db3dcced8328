/**
 * The kernel nbd driver's devices as sysfs shows them. /sys/block/nbdN exists for every device the
 * module created (nbds_max); /sys/block/nbdN/pid exists only while a client has it connected
 * (drivers/block/nbd.c creates the attribute when the device starts and removes it on
 * disconnect), so "no pid file" is "free". The sysfs root is configurable so that tests can run
 * the selection logic against a fake tree on machines without the module.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { SnapblockError } from "../errors/index.js";

export interface NbdDeviceState {
  index: number;
  /** Pid the kernel recorded for the connected client, or undefined when the device is free. */
  pid?: number;
  /** Size in bytes (0 when free). */
  sizeBytes: number;
}

export async function listNbdDevices(sysfsRoot: string): Promise<NbdDeviceState[]> {
  const blockDir = path.join(sysfsRoot, "block");
  let names: string[];
  try {
    names = await fs.readdir(blockDir);
  } catch (err) {
    throw new SnapblockError("IO", `could not list ${blockDir}: ${(err as Error).message}`, { cause: err });
  }
  const indexes = names
    .map((name) => /^nbd(\d+)$/.exec(name)?.[1])
    .filter((index): index is string => index !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
  const devices: NbdDeviceState[] = [];
  for (const index of indexes) devices.push(await readNbdDevice(sysfsRoot, index));
  return devices;
}

export async function readNbdDevice(sysfsRoot: string, index: number): Promise<NbdDeviceState> {
  const dir = path.join(sysfsRoot, "block", `nbd${index}`);
  const pidText = await readOptional(path.join(dir, "pid"));
  const sizeText = await readOptional(path.join(dir, "size"));
  const pid = pidText === undefined ? undefined : Number(pidText.trim());
  return {
    index,
    ...(pid === undefined || !Number.isSafeInteger(pid) ? {} : { pid }),
    sizeBytes: sizeText === undefined ? 0 : Number(sizeText.trim()) * 512,
  };
}

/** Free devices in index order: the ones an attach may try. */
export function freeNbdDevices(devices: readonly NbdDeviceState[]): number[] {
  return devices.filter((d) => d.pid === undefined).map((d) => d.index);
}

async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new SnapblockError("IO", `could not read ${file}: ${(err as Error).message}`, { cause: err });
  }
}

export interface NbdClientConnect {
  socketPath: string;
  exportName: string;
  devicePath: string;
  blockSize: number;
  readOnly: boolean;
  /** Connections for multi-conn (only worth it when the export advertises CAN_MULTI_CONN). */
  connections?: number;
  /** Request timeout in seconds; the kernel's default is 30. */
  timeoutSeconds?: number;
}

/**
 * `nbd-client -unix SOCKET -N EXPORT /dev/nbdN -b 4096 [-readonly] [-C n] [-t s]` (nbd-client(8)):
 * -b 4096 gives the device 4 KiB logical blocks, the page size and a divisor of the engine's
 * chunk size, so the filesystem above never issues sub-block I/O.
 */
export function nbdClientConnectArgs(c: NbdClientConnect): string[] {
  return [
    "-unix",
    c.socketPath,
    "-N",
    c.exportName,
    c.devicePath,
    "-b",
    String(c.blockSize),
    ...(c.readOnly ? ["-readonly"] : []),
    ...(c.connections !== undefined && c.connections > 1 ? ["-C", String(c.connections)] : []),
    ...(c.timeoutSeconds !== undefined ? ["-t", String(c.timeoutSeconds)] : []),
  ];
}

export function nbdClientDisconnectArgs(devicePath: string): string[] {
  return ["-d", devicePath];
}
