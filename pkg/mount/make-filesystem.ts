/**
 * Making a filesystem on a volume's device, only ever on a blank one (see filesystem-probe.ts).
 *
 * ext4: `mkfs.ext4 -F -q -b 4096 -m 0 -E lazy_itable_init=1,nodiscard`
 *   -F       the device is a whole disk, not a partition; without -F mke2fs may ask "Proceed
 *            anyway?" and, with no terminal, give up. Our own probe is the guard against
 *            overwriting data (mke2fs's interactive check is skipped without a tty anyway).
 *   -b 4096  small volumes would otherwise get 1 KiB blocks (mke2fs "small" profile): four times
 *            the metadata per byte, I/O below the engine's chunk size, and a lower online-resize
 *            ceiling when the volume is expanded later.
 *   -m 0     no blocks reserved for root: a volume belongs to one workload, which may not run as
 *            root, and 5% of a big volume is a lot of space to hide.
 *   lazy_itable_init=1  leave inode tables to the kernel's background zeroing, so mkfs does not
 *            write the whole inode table of a large volume up front.
 *   nodiscard  the device is blank: a new thin volume holds no data, so discarding it all only
 *            costs time (through nbdfuse + loop every discard is a FUSE fallocate and an NBD
 *            TRIM round trip).
 * xfs: `mkfs.xfs -q -K`
 *   -K       no discard, for the same reason.
 *   no -f    mkfs.xfs then refuses a device with any existing signature: a second guard.
 */
import { SnapblockError } from "../errors/index.js";
import { probeFilesystem, type DeviceContent } from "./filesystem-probe.js";
import { runCommand, type CommandRunner } from "./run-command.js";

export type FilesystemType = "ext4" | "xfs";

export const SUPPORTED_FILESYSTEMS: readonly FilesystemType[] = ["ext4", "xfs"];

/** Maps a CSI fs_type ("" means the driver's default, ext4) to a supported type. */
export function parseFilesystemType(fsType: string | undefined): FilesystemType {
  const value = fsType === undefined || fsType === "" ? "ext4" : fsType;
  if (value === "ext4" || value === "xfs") return value;
  throw new SnapblockError(
    "INVALID_ARGUMENT",
    `filesystem type ${JSON.stringify(fsType)} is not supported; use one of ${SUPPORTED_FILESYSTEMS.join(", ")}`,
  );
}

export interface MakeFilesystemOptions {
  device: string;
  fsType: FilesystemType;
  /** Filesystem label (ext4: up to 16 bytes, xfs: up to 12). */
  label?: string;
  runner?: CommandRunner;
  /** Default 10 minutes: lazy init keeps even large volumes fast, but a slow backend must not fail it. */
  timeoutMs?: number;
}

const LABEL_LIMIT: Record<FilesystemType, number> = { ext4: 16, xfs: 12 };

/** The mkfs command line for a blank device; exported for the unit tests and the docs. */
export function mkfsCommand(options: { device: string; fsType: FilesystemType; label?: string }): {
  command: string;
  args: string[];
} {
  const { device, fsType, label } = options;
  if (label !== undefined) {
    if (!/^[A-Za-z0-9_.-]*$/.test(label) || Buffer.byteLength(label) > LABEL_LIMIT[fsType]) {
      throw new SnapblockError(
        "INVALID_ARGUMENT",
        `label ${JSON.stringify(label)} must be at most ${LABEL_LIMIT[fsType]} of A-Z a-z 0-9 _ . - for ${fsType}`,
      );
    }
  }
  const labelArgs = label === undefined || label === "" ? [] : ["-L", label];
  switch (fsType) {
    case "ext4":
      return {
        command: "mkfs.ext4",
        args: [
          "-F",
          "-q",
          "-b",
          "4096",
          "-m",
          "0",
          "-E",
          "lazy_itable_init=1,nodiscard",
          ...labelArgs,
          device,
        ],
      };
    case "xfs":
      return { command: "mkfs.xfs", args: ["-q", "-K", ...labelArgs, device] };
  }
}

/**
 * Makes a filesystem on `device`, which must be blank. The probe is repeated here even when the
 * caller has just probed: this function is the last line before data loss.
 */
export async function makeFilesystem(options: MakeFilesystemOptions): Promise<void> {
  const run = options.runner ?? runCommand;
  const content = await probeFilesystem(options.device, { runner: run });
  if (content.kind !== "blank") throw notBlank(options.device, content, options.fsType);
  const { command, args } = mkfsCommand(options);
  await run({ command, args, timeoutMs: options.timeoutMs ?? 600_000 });
}

/** "blank": the device is blank and formatBlank was false, so nothing was done. */
export type EnsureFilesystemResult = "formatted" | "existing" | "blank";

export interface EnsureFilesystemOptions extends MakeFilesystemOptions {
  /**
   * Whether a blank device may get a filesystem (default true). The caller says false when it
   * cannot vouch that the device is new: blkid finds no signature in raw data either.
   */
  formatBlank?: boolean;
}

/**
 * NodeStage's "format on first use": leaves an existing filesystem of the requested type alone,
 * makes one on a blank device (when allowed), and refuses anything else (another filesystem
 * type, a partition table, LUKS, ...) with a message that says what was found.
 */
export async function ensureFilesystem(options: EnsureFilesystemOptions): Promise<EnsureFilesystemResult> {
  const run = options.runner ?? runCommand;
  const content = await probeFilesystem(options.device, { runner: run });
  switch (content.kind) {
    case "blank":
      if (options.formatBlank === false) return "blank";
      await makeFilesystem(options);
      return "formatted";
    case "filesystem":
      if (content.fsType === options.fsType) return "existing";
      throw notBlank(options.device, content, options.fsType);
    case "other":
      throw notBlank(options.device, content, options.fsType);
  }
}

function notBlank(device: string, content: DeviceContent, wanted: FilesystemType): SnapblockError {
  const found =
    content.kind === "filesystem"
      ? `a ${content.fsType} filesystem`
      : content.kind === "other"
        ? content.description
        : "nothing";
  return new SnapblockError(
    "INVALID_ARGUMENT",
    `${device} already contains ${found}; refusing to make a ${wanted} filesystem over it ` +
      `(request fs type ${content.kind === "filesystem" ? content.fsType : "of the existing data"} or use a new volume)`,
  );
}
