import type { Attachment, AttacherKind, FindOptions } from "../attach/index.js";
import type { EngineMeta, EngineVolume } from "../engine-api/index.js";

/**
 * The boundary between the two processes of a node (docs/design.md, "Processes of a node"): the
 * long-lived data plane owns the pool, the NBD server and the block devices it attaches (an
 * nbdfuse process + loop device, or an nbd-client connection); the CSI node plugin owns
 * filesystems and mounts and asks the data plane for everything else through this interface.
 * The node plugin holds nothing that I/O depends on, so it may be killed and restarted at any
 * moment: a device keeps answering while no node plugin runs. Two implementations: LocalDataPlane
 * (in the same process: `snapblock local`, and `snapblock node` without --dataplane-socket) and
 * the gRPC client of pkg/dataplane (a data plane process on a local unix socket).
 */
export interface NodeDataPlane {
  /** Who the data plane is: the node it serves and how it attaches devices. */
  info(): Promise<DataPlaneInfo>;
  /** The volume as the pool knows it (undefined: no such volume). */
  getVolume(engineName: string): Promise<DataPlaneVolume | undefined>;
  /** Records what the node learned about a volume's use (the raw-use mark, pkg/csi volume-mode.ts). */
  updateVolumeMeta(engineName: string, patch: EngineMeta): Promise<void>;
  /**
   * Exports the volume to the node path and attaches it as a block device (idempotent: the
   * existing healthy attachment is returned). `label` names the volume in messages (its CSI id).
   */
  attach(o: { engineName: string; label: string }): Promise<Attachment>;
  /** Detaches the volume's device and stops its export (idempotent; BUSY while it is mounted). */
  detach(engineName: string): Promise<void>;
  /** The volume's attachment, verified against the system, or undefined. */
  find(engineName: string, options?: FindOptions): Promise<Attachment | undefined>;
  /** Every attachment of this node, with its mounts (for `volume list`, metrics, a restarted plugin). */
  attachments(): Promise<VolumeAttachmentFacts[]>;
  /** Has the kernel re-read the device's size; the size afterwards. */
  refreshSize(engineName: string): Promise<number>;
  /**
   * Runs fn while no snapshot of the volume freezes its filesystem, and none starts: the node
   * plugin unmounts a staged filesystem under it (a filesystem unmounted while frozen could not be
   * thawed through its mount any more). Released when fn settles, or when the caller goes away.
   */
  exclusive<T>(engineName: string, fn: () => Promise<T>): Promise<T>;
}

export interface DataPlaneInfo {
  nodeId: string;
  /** The attacher the data plane uses; undefined: none on this machine (`reason` says why). */
  attacherKind: AttacherKind | undefined;
  /** Whether refreshSize can make a device in use see a grown volume. */
  onlineResize: boolean;
  /** Whether the pool is open. */
  ready: boolean;
  /** Why there is no attacher (attacherKind undefined). */
  reason: string;
}

/** What the node side needs of a volume: its size and its metadata (pkg/csi volumeFacts). */
export type DataPlaneVolume = Pick<EngineVolume, "name" | "sizeBytes" | "meta">;

/** What the block path holds for one volume: its device and who mounts it (pkg/operator reads it). */
export interface VolumeAttachmentFacts {
  engineName: string;
  health: "ok" | "broken";
  /** Why it is broken, one sentence each. */
  problems: string[];
  devicePath?: string;
  /** Filesystems mounted from the device: the staging mount and its bind mounts. */
  filesystemMounts: string[];
  /** Bind mounts of the device node (raw block volumes published). */
  deviceBindMounts: string[];
}
