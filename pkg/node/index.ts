/**
 * pkg/node: the node's data path behind the CSI Node service (NodeVolumeManager of pkg/csi), in
 * two halves that may run in two processes (docs/design.md, "Processes of a node"): the data plane
 * (LocalDataPlane: NBD export of the volume by pkg/nbd -> kernel block device by pkg/attach, and
 * the snapshot freeze) and the node plugin's filesystems and mounts (NbdNodeVolumes, pkg/mount),
 * joined by the NodeDataPlane interface. Also the NBD exports of volumes and snapshots for a
 * person's tools, which share the node's NBD server and take turns with it (one user of a volume
 * at a time). See docs/node-attach.md. This is the module's only entry point.
 */
export { NbdNodeVolumes, type NbdNodeVolumesOptions } from "./nbd-node-volumes.js";
export type { DataPlaneInfo, DataPlaneVolume, NodeDataPlane, VolumeAttachmentFacts } from "./data-plane.js";
export { LocalDataPlane, type DataPlanePool, type LocalDataPlaneOptions } from "./local-data-plane.js";
export { VolumeClaims, type VolumeUser } from "./volume-claims.js";
export {
  UserExports,
  type DeviceOpener,
  type ExportKind,
  type UserExport,
  type UserExportsOptions,
} from "./user-exports.js";
export { DataPlaneWatch, type DataPlaneWatchOptions } from "./data-plane-watch.js";
