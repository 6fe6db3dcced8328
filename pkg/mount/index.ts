/**
 * pkg/mount: filesystems and mounts on the node (docs/design.md section 1, "mkfs (first use) -> mount
 * -> bind into the pod"), and the one helper through which the node layer runs programs.
 * See docs/node-attach.md. This is the module's only entry point.
 */
export {
  runCommand,
  findExecutable,
  describeCommand,
  CommandFailedError,
  type CommandRunner,
  type CommandResult,
  type RunCommandOptions,
} from "./run-command.js";
export {
  assertSafeAbsolutePath,
  assertPathWithinRoot,
  assertRealPathWithinRoot,
  assertNodePath,
  NAME_MAX,
  type NodePathCheck,
} from "./path-safety.js";
export {
  parseMountInfo,
  unescapeMountField,
  readMountInfo,
  findMount,
  isMountPoint,
  containingMount,
  matchDeviceMounts,
  findMountsOfDevice,
  blockDeviceNumber,
  splitDeviceNumber,
  type MountInfoEntry,
  type MountInfoOptions,
  type DeviceMounts,
  type DeviceNumber,
} from "./mountinfo.js";
export { probeFilesystem, parseBlkidExport, classifyBlkid, type DeviceContent } from "./filesystem-probe.js";
export {
  makeFilesystem,
  ensureFilesystem,
  mkfsCommand,
  parseFilesystemType,
  SUPPORTED_FILESYSTEMS,
  type FilesystemType,
  type MakeFilesystemOptions,
  type EnsureFilesystemResult,
  type EnsureFilesystemOptions,
} from "./make-filesystem.js";
export { validateMountFlags, type ValidateMountFlagsOptions } from "./mount-flags.js";
export {
  mountFilesystem,
  mountOptionsFor,
  type MountFilesystemOptions,
  type MountResult,
} from "./mount-filesystem.js";
export { bindMount, type BindMountOptions } from "./bind-mount.js";
export { unmount, prepareMountTarget, removeMountTarget, type UnmountOptions } from "./unmount.js";
export { growFilesystem, type GrowFilesystemOptions } from "./grow-filesystem.js";
export { volumeStats, blockDeviceSize, type FilesystemStats } from "./volume-stats.js";
export { checkFilesystem, type FilesystemCheckResult } from "./check-filesystem.js";
export {
  withFrozenFilesystem,
  type FreezeFilesystemOptions,
  type FrozenResult,
} from "./freeze-filesystem.js";
