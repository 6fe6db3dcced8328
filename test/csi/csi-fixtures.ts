import type { Client } from "@grpc/grpc-js";
import { callCsi } from "../../pkg/csi/index.js";

/** Requests as the sidecars send them. */
export const MOUNT_EXT4 = {
  mount: { fsType: "ext4", mountFlags: [] },
  accessMode: { mode: "SINGLE_NODE_WRITER" },
};
export const MOUNT_ANY = { mount: {}, accessMode: { mode: "SINGLE_NODE_WRITER" } };
export const BLOCK = { block: {}, accessMode: { mode: "SINGLE_NODE_WRITER" } };
export const MiB = 1024 * 1024;

export interface VolumeOut {
  volumeId: string;
  capacityBytes: number;
  volumeContext: Record<string, string>;
  contentSource: { snapshot?: { snapshotId: string } | null; volume?: { volumeId: string } | null } | null;
  accessibleTopology: Array<{ segments: Record<string, string> }>;
}

export interface SnapshotOut {
  snapshotId: string;
  sourceVolumeId: string;
  sizeBytes: number;
  readyToUse: boolean;
  creationTime: { seconds: number; nanos: number } | null;
}

export function createVolume(controller: Client, request: object): Promise<{ volume: VolumeOut }> {
  return callCsi(controller, "CreateVolume", request);
}

export function createSnapshot(
  controller: Client,
  name: string,
  sourceVolumeId: string,
): Promise<{ snapshot: SnapshotOut }> {
  return callCsi(controller, "CreateSnapshot", { name, sourceVolumeId });
}
