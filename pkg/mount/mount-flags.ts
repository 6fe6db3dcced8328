/**
 * Validation of CSI MountVolume.mount_flags (from a StorageClass's mountOptions or a PV), which
 * the node plugin passes to mount(8) as root. Whoever can create a StorageClass or PV can write
 * them, so they are checked in two layers:
 *
 * 1. Shape (an allowlist of characters): each flag is ONE option, `name` or `name=value`, made of
 *    letters, digits and `_ . : + - @ %`. No comma, because mount(8) splits `-o` on commas and a
 *    flag "noatime,bind" would smuggle a second option past the checks below; no whitespace, quote
 *    or control character; no `/`, because no option we support takes a path, and options that do
 *    (ext4 journal_path=, xfs logdev=, util-linux loop=) point the mount at other files or devices
 *    of the host.
 * 2. Names (a denylist), for options that are well-formed but change what mount(8) does rather
 *    than how the filesystem behaves - see DENIED below, each with its reason.
 *
 * Filesystem-specific tuning (noatime, discard, data=ordered, commit=30, inode64, logbsize=256k,
 * errors=remount-ro, ...) passes; the kernel rejects what the filesystem does not know.
 */
import { SnapblockError } from "../errors/index.js";

const FLAG_SHAPE = /^[A-Za-z0-9_][A-Za-z0-9_.+-]*(=[A-Za-z0-9_.:+@%=-]*)?$/;
const MAX_FLAG_LENGTH = 256;
/** The kernel takes at most one page of mount data. */
const MAX_TOTAL_LENGTH = 4000;

const DENIED: ReadonlyMap<string, string> = new Map([
  // mount(8) operations, not options: they would bind, move or remount something else.
  ["bind", "turns the mount into a bind mount of another path"],
  ["rbind", "turns the mount into a recursive bind mount of another path"],
  ["move", "moves another mount"],
  ["remount", "remounts whatever is already mounted at the target"],
  // Propagation belongs to the CO (kubelet's mountPropagation), not to a StorageClass.
  ["shared", "changes mount propagation"],
  ["rshared", "changes mount propagation"],
  ["slave", "changes mount propagation"],
  ["rslave", "changes mount propagation"],
  ["private", "changes mount propagation"],
  ["rprivate", "changes mount propagation"],
  ["unbindable", "changes mount propagation"],
  ["runbindable", "changes mount propagation"],
  // util-linux sets up its own loop device from these, over a file of its choice.
  ["loop", "makes mount(8) set up a loop device over another file"],
  ["offset", "is a loop-device option"],
  ["sizelimit", "is a loop-device option"],
  ["encryption", "is a loop-device option"],
  // Unprivileged-user mounts: let any user unmount the volume (and imply nosuid/nodev games).
  ["user", "allows unprivileged users to unmount the volume"],
  ["users", "allows unprivileged users to unmount the volume"],
  ["owner", "allows unprivileged users to unmount the volume"],
  ["group", "allows unprivileged users to unmount the volume"],
  ["helper", "runs an external helper program"],
  ["uhelper", "runs an external helper program"],
  // Journal / log / realtime data on another device of the host.
  ["journal_dev", "puts the journal on another device of the host"],
  ["journal_path", "puts the journal on another device of the host"],
  ["logdev", "puts the log on another device of the host"],
  ["rtdev", "puts realtime data on another device of the host"],
  // SELinux labels are set by kubelet only when the CSIDriver advertises seLinuxMount, which
  // snapblock does not; in a StorageClass they would relabel the volume for every pod.
  ["context", "sets an SELinux context (snapblock does not advertise seLinuxMount)"],
  ["fscontext", "sets an SELinux context (snapblock does not advertise seLinuxMount)"],
  ["defcontext", "sets an SELinux context (snapblock does not advertise seLinuxMount)"],
  ["rootcontext", "sets an SELinux context (snapblock does not advertise seLinuxMount)"],
]);

/** Skipping journal/log replay is only safe on a read-only mount. */
const REPLAY_SKIPPERS = new Set(["noload", "norecovery"]);

export interface ValidateMountFlagsOptions {
  /** The mount will be read-only: "rw" contradicts it, "noload"/"norecovery" become acceptable. */
  readOnly?: boolean;
}

/** Returns the flags (duplicates removed, order kept) or throws INVALID_ARGUMENT naming the bad flag. */
export function validateMountFlags(
  flags: readonly string[],
  options: ValidateMountFlagsOptions = {},
): string[] {
  const accepted: string[] = [];
  for (const flag of flags) {
    if (typeof flag !== "string" || flag === "") throw invalidFlag(flag, "is empty");
    if (flag.length > MAX_FLAG_LENGTH)
      throw invalidFlag(flag, `is longer than ${MAX_FLAG_LENGTH} characters`);
    if (flag.includes(",")) {
      throw invalidFlag(flag, "contains a comma; give each mount option as its own mount flag");
    }
    if (!FLAG_SHAPE.test(flag)) {
      throw invalidFlag(
        flag,
        "is not of the form name or name=value using letters, digits and _ . : + - @ % (no paths, spaces or quotes)",
      );
    }
    const name = flag.split("=")[0] ?? flag;
    const lower = name.toLowerCase();
    const denied = DENIED.get(lower);
    if (denied !== undefined) throw invalidFlag(flag, `is not allowed: it ${denied}`);
    if (/^x-/i.test(lower))
      throw invalidFlag(flag, "is not allowed: X-* options instruct mount(8) or its helpers");
    if (options.readOnly === true && lower === "rw") {
      throw invalidFlag(flag, "contradicts the read-only mount that was requested");
    }
    if (options.readOnly !== true && REPLAY_SKIPPERS.has(lower)) {
      throw invalidFlag(flag, "skips journal replay and is only allowed on read-only mounts");
    }
    if (!accepted.includes(flag)) accepted.push(flag);
  }
  if (accepted.includes("ro") && accepted.includes("rw"))
    throw invalidFlag("ro, rw", "contradict each other");
  if (accepted.join(",").length > MAX_TOTAL_LENGTH) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `mount flags are longer than ${MAX_TOTAL_LENGTH} characters in total`,
    );
  }
  return accepted;
}

function invalidFlag(flag: unknown, why: string): SnapblockError {
  return new SnapblockError("INVALID_ARGUMENT", `mount flag ${JSON.stringify(flag)} ${why}`);
}
