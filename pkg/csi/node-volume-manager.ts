import type { Capability, FsType } from "./volume-capabilities.js";
import { StatusError } from "../errors/index.js";

/**
 * The data half of the Node service: what happens to a volume on the node once a request has been
 * validated and its volume locked. The implementation wires pkg/nbd (export the volume on a unix
 * socket), pkg/attach (the export as a kernel block device) and pkg/mount (mkfs, mount, bind).
 * Every method is idempotent, as the CSI spec asks of the Node RPCs: doing it twice is doing it
 * once; undoing what is not there succeeds.
 */
export interface NodeVolumeRef {
  /** CSI volume id (for messages). */
  volumeId: string;
  /** Engine name of the volume (export name, device naming). */
  engineName: string;
}

export interface NodeStageOptions extends NodeVolumeRef {
  stagingPath: string;
  capability: Capability;
  /** Filesystem to make when the device is blank (mount access type). */
  fsType: FsType;
  /**
   * Set when a blank device must not get a filesystem (volume-mode.ts): the FAILED_PRECONDITION
   * message to answer with, after undoing what this call attached.
   */
  refuseFormat?: string;
}

export interface NodeUnstageOptions extends NodeVolumeRef {
  stagingPath: string;
}

export interface NodePublishOptions extends NodeVolumeRef {
  stagingPath: string;
  targetPath: string;
  capability: Capability;
  readOnly: boolean;
}

export interface NodeUnpublishOptions extends NodeVolumeRef {
  targetPath: string;
}

export interface NodeStatsOptions extends NodeVolumeRef {
  volumePath: string;
}

export interface NodeVolumeUsage {
  unit: "BYTES" | "INODES";
  total: number;
  used: number;
  available: number;
}

export interface NodeVolumeStats {
  usage: NodeVolumeUsage[];
  condition: { abnormal: boolean; message: string };
}

export interface NodeExpandOptions extends NodeVolumeRef {
  volumePath: string;
  stagingPath?: string;
  capability?: Capability;
  /** The volume's size in the pool (already grown by ControllerExpandVolume). */
  sizeBytes: number;
}

export interface NodeVolumeManager {
  stage(options: NodeStageOptions): Promise<void>;
  unstage(options: NodeUnstageOptions): Promise<void>;
  publish(options: NodePublishOptions): Promise<void>;
  unpublish(options: NodeUnpublishOptions): Promise<void>;
  stats(options: NodeStatsOptions): Promise<NodeVolumeStats>;
  expand(options: NodeExpandOptions): Promise<{ capacityBytes: number }>;
  /** Detaches nothing: releases what the process holds (NBD exports) at shutdown. */
  close(): Promise<void>;
}

/**
 * The manager used when the node data path is not available in this build or on this machine:
 * every data call answers UNIMPLEMENTED with the reason, after validation and locking.
 */
export function unavailableNodeVolumeManager(reason: string): NodeVolumeManager {
  const fail = (what: string): Promise<never> =>
    Promise.reject(new StatusError("UNIMPLEMENTED", `${what} is not available on this node: ${reason}`));
  return {
    stage: () => fail("NodeStageVolume"),
    unstage: () => fail("NodeUnstageVolume"),
    publish: () => fail("NodePublishVolume"),
    unpublish: () => fail("NodeUnpublishVolume"),
    stats: () => fail("NodeGetVolumeStats"),
    expand: () => fail("NodeExpandVolume"),
    close: () => Promise.resolve(),
  };
}
