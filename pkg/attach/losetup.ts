/**
 * Loop devices through losetup(8): the last step of the nbdfuse path turns the FUSE file into a
 * block device. The kernel assigns the device (`--find --show` is race-free across processes:
 * util-linux retries when another process takes the same free device).
 */
import { SnapblockError } from "../errors/index.js";
import { runCommand, type CommandRunner } from "../mount/index.js";

export interface LoopDevice {
  name: string;
  /** Backing file as the kernel recorded it, without the " (deleted)" suffix. */
  backFile: string;
  backFileDeleted: boolean;
  readOnly: boolean;
  directIo: boolean;
  autoclear: boolean;
  offset: number;
  sizeLimit: number;
}

/** `losetup -J -l` output; empty input (no loop devices in use) is an empty list. */
export function parseLosetupJson(text: string): LoopDevice[] {
  if (text.trim() === "") return [];
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new SnapblockError(
      "INTERNAL",
      `losetup printed something that is not JSON: ${text.slice(0, 200)}`,
      {
        cause: err,
      },
    );
  }
  const list = (value as { loopdevices?: unknown } | null)?.loopdevices;
  if (!Array.isArray(list)) throw new SnapblockError("INTERNAL", "losetup JSON has no loopdevices array");
  return list.map((item: Record<string, unknown>) => {
    const rawBackFile = typeof item["back-file"] === "string" ? item["back-file"] : "";
    const deleted = rawBackFile.endsWith(" (deleted)");
    if (typeof item.name !== "string")
      throw new SnapblockError("INTERNAL", "losetup JSON entry without a name");
    return {
      name: item.name,
      backFile: deleted ? rawBackFile.slice(0, -" (deleted)".length) : rawBackFile,
      backFileDeleted: deleted,
      readOnly: asBool(item.ro),
      directIo: asBool(item.dio),
      autoclear: asBool(item.autoclear),
      offset: Number(item.offset ?? 0),
      sizeLimit: Number(item.sizelimit ?? 0),
    };
  });
}

/** util-linux before 2.37 printed booleans as "0"/"1" strings. */
function asBool(value: unknown): boolean {
  return value === true || value === 1 || value === "1";
}

export async function listLoopDevices(run: CommandRunner = runCommand): Promise<LoopDevice[]> {
  const result = await run({ command: "losetup", args: ["-J", "-l"], timeoutMs: 30_000 });
  return parseLosetupJson(result.stdout);
}

export function loopAttachArgs(options: { file: string; readOnly: boolean; directIo: boolean }): string[] {
  return [
    "--find",
    "--show",
    ...(options.directIo ? ["--direct-io=on"] : []),
    ...(options.readOnly ? ["--read-only"] : []),
    "--",
    options.file,
  ];
}

/** Binds a free loop device to `file`; returns its path (/dev/loopN). */
export async function attachLoopDevice(options: {
  file: string;
  readOnly: boolean;
  directIo: boolean;
  run?: CommandRunner;
}): Promise<string> {
  const run = options.run ?? runCommand;
  const result = await run({ command: "losetup", args: loopAttachArgs(options), timeoutMs: 60_000 });
  const device = result.stdout.trim();
  if (!/^\/dev\/loop\d+$/.test(device)) {
    throw new SnapblockError(
      "INTERNAL",
      `losetup printed ${JSON.stringify(device)} instead of a loop device path`,
    );
  }
  return device;
}

export async function detachLoopDevice(device: string, run: CommandRunner = runCommand): Promise<void> {
  await run({ command: "losetup", args: ["-d", device], timeoutMs: 60_000 });
}

/** LOOP_SET_CAPACITY: the loop device re-reads the size of its backing file. */
export async function refreshLoopCapacity(device: string, run: CommandRunner = runCommand): Promise<void> {
  await run({ command: "losetup", args: ["-c", device], timeoutMs: 60_000 });
}
