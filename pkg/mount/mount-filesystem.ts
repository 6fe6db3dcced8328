/**
 * Mounting a volume's filesystem at its staging path (CSI NodeStageVolume).
 *
 * Idempotent the way CSI asks (spec: NodeStageVolume "MUST be idempotent"): the same device
 * already mounted at the same target with the same read-only-ness is success; anything else
 * already mounted there is ALREADY_EXISTS.
 */
import { SnapblockError } from "../errors/index.js";
import type { FilesystemType } from "./make-filesystem.js";
import { validateMountFlags } from "./mount-flags.js";
import { blockDeviceNumber, findMount, type MountInfoOptions } from "./mountinfo.js";
import { assertSafeAbsolutePath } from "./path-safety.js";
import { runCommand, type CommandRunner } from "./run-command.js";

export interface MountFilesystemOptions extends MountInfoOptions {
  device: string;
  target: string;
  fsType: FilesystemType;
  readOnly: boolean;
  /** CSI mount_flags; validated by validateMountFlags. */
  flags?: readonly string[];
  runner?: CommandRunner;
}

export interface MountResult {
  /** True when the same mount was already in place and nothing was done. */
  alreadyMounted: boolean;
}

/**
 * Options snapblock adds itself:
 * - xfs `nouuid`: a volume restored from a snapshot, or cloned, carries the same filesystem UUID
 *   as its source, and xfs refuses to mount a second filesystem with a UUID already mounted on
 *   the node. Both copies on one node is the normal case for a local-disk driver.
 * - `ro` when the mount is read-only.
 */
export function mountOptionsFor(options: {
  fsType: FilesystemType;
  readOnly: boolean;
  flags?: readonly string[];
}): string[] {
  const flags = validateMountFlags(options.flags ?? [], { readOnly: options.readOnly });
  const added: string[] = [];
  if (options.fsType === "xfs" && !flags.includes("nouuid")) added.push("nouuid");
  if (options.readOnly && !flags.includes("ro")) added.push("ro");
  return [...flags, ...added];
}

export async function mountFilesystem(options: MountFilesystemOptions): Promise<MountResult> {
  const target = assertSafeAbsolutePath(options.target, "mount target");
  const device = assertSafeAbsolutePath(options.device, "device");
  const mountOptions = mountOptionsFor(options);
  const deviceNumber = await blockDeviceNumber(device);
  const existing = await findMount(target, options);
  if (existing !== undefined) {
    const sameDevice = existing.major === deviceNumber.major && existing.minor === deviceNumber.minor;
    const existingReadOnly = existing.mountOptions.includes("ro");
    if (sameDevice && existing.root === "/" && existingReadOnly === options.readOnly)
      return { alreadyMounted: true };
    throw new SnapblockError(
      "ALREADY_EXISTS",
      `${target} already has ${existing.source} (${existing.fsType}, ${existingReadOnly ? "ro" : "rw"}) mounted; ` +
        `wanted ${device} ${options.readOnly ? "ro" : "rw"}`,
    );
  }
  const run = options.runner ?? runCommand;
  const args = [
    "-t",
    options.fsType,
    ...(mountOptions.length > 0 ? ["-o", mountOptions.join(",")] : []),
    "--",
    device,
    target,
  ];
  await run({ command: "mount", args, timeoutMs: 120_000 });
  return { alreadyMounted: false };
}
