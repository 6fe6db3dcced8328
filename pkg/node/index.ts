/**
 * pkg/node: the node's data path behind the CSI Node service (NodeVolumeManager of pkg/csi):
 * NBD export of the volume (pkg/nbd) -> kernel block device (pkg/attach) -> filesystem and mounts
 * (pkg/mount); and the NBD exports of volumes and snapshots for a person's tools, which share the
 * node's NBD server and take turns with it (one user of a volume at a time). See
 * docs/node-attach.md. This is the module's only entry point.
 */
export {
  NbdNodeVolumes,
  type NbdNodeVolumesOptions,
  type VolumeAttachmentFacts,
  type VolumeOpener,
} from "./nbd-node-volumes.js";
export { VolumeClaims, type VolumeUser } from "./volume-claims.js";
export {
  UserExports,
  type DeviceOpener,
  type ExportKind,
  type UserExport,
  type UserExportsOptions,
} from "./user-exports.js";
