/**
 * pkg/node: the node's data path behind the CSI Node service (NodeVolumeManager of pkg/csi):
 * NBD export of the volume (pkg/nbd) -> kernel block device (pkg/attach) -> filesystem and mounts
 * (pkg/mount). See docs/node-attach.md. This is the module's only entry point.
 */
export { NbdNodeVolumes, type NbdNodeVolumesOptions, type VolumeOpener } from "./nbd-node-volumes.js";
