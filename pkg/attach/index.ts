/**
 * pkg/attach: turns a volume's NBD export (a unix socket served by pkg/nbd) into a kernel block
 * device on the node, through the kernel nbd driver (nbd-client) or, where the kernel has no nbd
 * module, through nbdfuse + a loop device. Attachments are recorded in a state directory and
 * survive a restart of the node plugin. See docs/node-attach.md. This is the module's only entry
 * point.
 */
export {
  isValidAttachmentKey,
  type AttacherKind,
  type AttachOptions,
  type Attachment,
  type AttachmentHealth,
  type BlockAttacher,
  type FindOptions,
  type ReconnectOptions,
  type ReconnectResult,
} from "./attachment.js";
export { chooseAttacher, type ChooseAttacherOptions, type ChosenAttacher } from "./choose-attacher.js";
export {
  NbdClientAttacher,
  planReconnect,
  type NbdClientAttacherOptions,
  type ReconnectPlan,
} from "./nbd-client-attacher.js";
export {
  DEFAULT_DEAD_CONN_TIMEOUT_SECONDS,
  NBD_NETLINK_HELPER,
  NbdNetlinkError,
  NbdNetlinkHelper,
  bundledNbdNetlinkHelper,
  findNbdNetlinkHelper,
  parseHelperOutput,
} from "./nbd-netlink.js";
export {
  NbdfuseLoopAttacher,
  nbdfuseLoopMissing,
  type NbdfuseLoopAttacherOptions,
} from "./nbdfuse-loop-attacher.js";
export { deviceUsersCheck, type DeviceUsersCheck } from "./device-users.js";
export { listLoopDevices, parseLosetupJson, type LoopDevice } from "./losetup.js";
export { KeyedMutex } from "./keyed-mutex.js";
