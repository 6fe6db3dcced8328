/**
 * What the CSI Controller needs from a node's engine. One interface, two implementations
 * (docs/design.md section 1): LocalEngine over an in-process Pool (local mode, and the node plugin),
 * and, for cluster mode, a gRPC client of the node's engine service. The controller never knows
 * which one it talks to, so everything here is asynchronous and made of plain data.
 *
 * Errors are SnapblockErrors with the engine's codes (NOT_FOUND, ALREADY_EXISTS, NO_SPACE, BUSY,
 * OUT_OF_RANGE, CLOSED while the pool is not open, ...).
 */
export type EngineDeviceKind = "volume" | "snapshot";

/** Small string metadata kept with a volume or snapshot (CSI name, parameters, capabilities). */
export type EngineMeta = Readonly<Record<string, string>>;

/**
 * The meta keys under which the controller keeps the PVC a volume was made for (from the
 * provisioner's --extra-create-metadata), read by whoever raises Events about the volume.
 */
export const PVC_META = { name: "csi.pvcName", namespace: "csi.pvcNamespace" } as const;

export interface EngineCopyProgress {
  state: "running" | "done" | "cancelled" | "failed";
  copiedChunks: number;
  totalChunks: number;
  error?: string;
}

/**
 * A node holding a whole copy of a snapshot, and where to reach it: the snapshot's own node
 * (`name` is the snapshot's engine name there) or a node with a complete replica (`name` is the
 * replica's engine name there, replicaName(origin)).
 */
export interface EngineHolder {
  nodeId: string;
  /** host:port of the node's engine service. */
  address: string;
  name: string;
}

/** Content still arriving from another node (a cross-node restore, a replica being made). */
export interface EnginePullProgress {
  /** The snapshot it comes from, as "<node>/<engine name>" (its CSI snapshot id). */
  origin: string;
  /** Chunks not here yet, and how many there were at the start. */
  pendingChunks: number;
  totalChunks: number;
  state: "running" | "stalled" | "done" | "stopped";
  /** Bytes received by this process, and the recent rate (bytes/s). */
  bytes: number;
  rate: number;
  /** Why it is stalled (the holders cannot be reached, say). */
  error?: string;
}

export interface EngineVolume {
  /** The engine name (unique among volumes of the pool). */
  name: string;
  /** Pool-unique, increasing with creation order: the sort key of listings and page tokens. */
  id: number;
  sizeBytes: number;
  createdAt: Date;
  /** The snapshot or volume this volume was restored or cloned from (engine name). */
  source?: { kind: EngineDeviceKind; name: string };
  /** Progress of a full background copy, when one was asked for. */
  copy?: EngineCopyProgress;
  /** While content is still arriving from another node. */
  pull?: EnginePullProgress;
  /** Its protection policy (recovery points, docs/protection.md), canonical text; absent: off. */
  protection?: string;
  /**
   * Set while the volume's block device on its node is broken (I/O on it fails, e.g. its NBD
   * connection died with a data plane that was killed): why, as the node's data plane sees it.
   */
  attachmentProblem?: string;
  meta: EngineMeta;
}

/** The node's view of its block devices, for the volumes the engine reports (LocalEngine.useAttachmentHealth). */
export interface AttachmentHealthSource {
  /** Why the volume's block device on this node is broken; undefined when it is fine or not attached. */
  attachmentProblem(engineName: string): string | undefined;
}

export interface EngineSnapshot {
  name: string;
  id: number;
  sizeBytes: number;
  createdAt: Date;
  /** Engine name of the volume the snapshot was taken of (at snapshot time). */
  sourceVolume: string;
  /** While a replica's content is still arriving from another node. */
  pull?: EnginePullProgress;
  /** A recovery point pinned by an export (EnginePointPins): never thinned. Absent: not pinned. */
  pinned?: boolean;
  meta: EngineMeta;
}

/**
 * Pinning recovery points (docs/protection.md, "Exported points"): a point exported to
 * Kubernetes as a VolumeSnapshot is a user's snapshot, kept from thinning and from the space
 * rule until DeleteSnapshot deletes it or it is unpinned. The node's own engine (the operator
 * service of `snapblock local`); not part of EngineApi, which the CSI controller uses.
 */
export interface EnginePointPins {
  /**
   * Pins (`pinned` true) or releases a point by engine name; durable when it returns, idempotent.
   * NOT_FOUND when there is no such point, INVALID_ARGUMENT for a snapshot that is not a point.
   */
  pinPoint(name: string, pinned: boolean): Promise<EngineSnapshot>;
}

export interface EngineListing<T> {
  items: T[];
  /** Every id below this has been handed out; a page token at or past it cannot be ours. */
  idWatermark: number;
}

export interface EngineCapacity {
  /** Capacity of the pool's data area. */
  totalBytes: number;
  /** Bytes of chunks not in use. */
  freeBytes: number;
  /** Sum of the sizes of all volumes (thin provisioning: may exceed what is written). */
  provisionedBytes: number;
  /**
   * How much more volume size the pool accepts: totalBytes x overcommit - provisionedBytes, but
   * never more than the free chunks (less those held for running full copies) x overcommit: a
   * pool whose snapshots have taken the space has no room left, whatever was provisioned.
   */
  availableBytes: number;
  /** Largest single volume the engine can make. */
  maxVolumeBytes: number;
  /**
   * Volumes whose recovery points were deleted because all points of the pool held more than
   * their share of its free space (docs/protection.md, "Space"), since the engine opened: the
   * controller raises a Warning Event on each one's PVC when its count grows. Absent: none.
   */
  pointsDroppedForSpace?: EnginePointsDropped[];
}

export interface EnginePointsDropped {
  volume: string;
  /** Points of this volume deleted for space since the engine opened. */
  count: number;
  /** At the last such deletion: bytes all points held, and what they may hold. */
  heldBytes: number;
  budgetBytes: number;
  /** The share of the pool's free space points may hold. */
  shareOfFree: number;
}

export interface EngineCreateVolumeOptions {
  name: string;
  sizeBytes: number;
  meta: EngineMeta;
  /**
   * Restore from a snapshot or clone a volume; shares chunks, ready at once. With `nodeId`
   * naming another node and `holders`, the snapshot is on other nodes: the volume is ready at
   * once too, its content fetched on demand and pulled in the background.
   */
  source?: { kind: EngineDeviceKind; name: string; nodeId?: string; holders?: EngineHolder[] };
  /** With a source: copy every chunk in the background so nothing stays shared. */
  fullCopy?: boolean;
  /** A protection policy (recovery points) to set on the new volume; validated before anything is made. */
  protection?: string;
}

export interface EngineCreateSnapshotOptions {
  volume: string;
  name: string;
  meta: EngineMeta;
  /**
   * Freeze the volume's filesystem around the snapshot when it is staged with one on the node
   * holding the pool (default true), so that the snapshot needs no journal recovery. Raw block
   * and unstaged volumes are snapshotted as they are either way.
   */
  freezeFilesystem?: boolean;
  /** Refuse the snapshot (NO_SPACE -> RESOURCE_EXHAUSTED) when the volume is at a limit. */
  limits?: EngineSnapshotLimits;
}

/** One snapshot of a group snapshot (EngineApi.createSnapshotGroup). */
export interface EngineGroupMember {
  volume: string;
  name: string;
  meta: EngineMeta;
}

export interface EngineCreateSnapshotGroupOptions {
  /** Volumes of this node and the names of their snapshots, each volume once. */
  members: EngineGroupMember[];
  /**
   * Take the snapshots under this hold (EngineApi.holdWrites on this node): the group has members
   * on other nodes too. Without it the engine holds the volumes' writes itself for the moment of
   * the records. Either way, one commit: every member or none.
   */
  holdId?: string;
}

/** The default bound of a write hold across nodes (docs/cluster.md, "Group snapshots"). */
export const DEFAULT_GROUP_HOLD_MS = 2000;

/** Per-volume snapshot limits, checked by the engine atomically with the snapshot's creation. */
export interface EngineSnapshotLimits {
  /** Most snapshots the volume may have. */
  maxSnapshots?: number;
  /** Most bytes its snapshots may hold that nothing else maps. */
  maxSnapshotBytes?: number;
  /** How each limit is named in the refusal (the StorageClass parameter that set it). */
  names?: { maxSnapshots?: string; maxSnapshotBytes?: string };
}

/**
 * Who holds a pool's space (pkg/engine space-accounting.ts). Exclusive bytes are what deleting
 * the volume or snapshot gives back; shared bytes are mapped by it and by something else.
 */
export interface EngineSpace {
  pool: {
    totalBytes: number;
    /** Bytes of chunks in use. */
    allocatedBytes: number;
    freeBytes: number;
    /** Sum of the volumes' sizes. */
    provisionedBytes: number;
    /** The overcommit the engine allows: provisionedBytes may reach totalBytes times this. */
    overcommitRatio: number;
    /** Chunks the background filler is giving back (no table maps them any more). */
    reclaimableBytes: number;
    /** Free space held back for full copies that are running. */
    copyReservedBytes: number;
    /** Chunks mapped by more than one volume or snapshot. */
    sharedBytes: number;
    chunkSize: number;
  };
  volumes: EngineVolumeSpace[];
  snapshots: EngineSnapshotSpace[];
}

export interface EngineVolumeSpace {
  name: string;
  sizeBytes: number;
  /** Bytes of chunks the volume maps (written, not trimmed). */
  mappedBytes: number;
  exclusiveBytes: number;
  sharedBytes: number;
  /** Bytes only its snapshots hold: what deleting all of them would give back. */
  snapshotOnlyBytes: number;
  /** Its snapshots, recovery points included. */
  snapshotCount: number;
  /** Its recovery points (docs/protection.md). */
  pointCount: number;
  /** Its protection policy, canonical text; "" when off (the wire has no absence). */
  protection: string;
}

export interface EngineSnapshotSpace {
  name: string;
  sourceVolume: string;
  sizeBytes: number;
  mappedBytes: number;
  exclusiveBytes: number;
  sharedBytes: number;
}

/**
 * The node side's hook around a snapshot (LocalEngine.useQuiescer): the engine knows pools, the
 * node knows what is staged and mounted. quiesce runs fn with the volume's data made consistent
 * on its blocks (a staged filesystem frozen) and undoes that afterwards, always; it fails rather
 * than run fn when it cannot quiesce, and fails after fn when the quiesce could not last until fn
 * ended (then fn's result may be inconsistent, and the caller discards it).
 */
export interface VolumeQuiescer {
  quiesce<T>(volume: string, fn: () => Promise<T>): Promise<T>;
}

/**
 * Where a new volume may go, for EngineApi.placeVolume. Node ids come from the request's
 * accessibility_requirements (topology key topology.snapblock.dev/node).
 */
export interface EnginePlacementRequest {
  /** Engine name of the new volume (an earlier attempt may already have made it somewhere). */
  name: string;
  /** Size of the new volume (0 when it is taken from the source). */
  sizeBytes: number;
  /** The volume must be on one of these nodes; undefined: no restriction. */
  requisite?: string[];
  /** Try these first, in order (WaitForFirstConsumer puts the pod's node first). */
  preferred: string[];
  /** Restore or clone: the node holding the source, where the new volume must go. */
  sourceNodeId?: string;
  /**
   * CreateVolume's parameters, for reporting only (the provisioner's --extra-create-metadata
   * puts the PVC's name there, so a failed placement can become an Event on the PVC).
   */
  parameters?: Readonly<Record<string, string>>;
}

/** Which block metadata to list (EngineApi.blockMetadata; CSI SnapshotMetadata service). */
export interface EngineBlockMetadataRequest {
  /** Engine name of the snapshot. */
  snapshot: string;
  /**
   * Engine name of an earlier snapshot of the same volume: list only the ranges where the two may
   * differ (every byte that differs is in them). Without it: the snapshot's allocated ranges.
   */
  baseSnapshot?: string;
  /** Byte offset to list from: ranges ending at or before it are left out, one across it clipped. */
  startingOffset: number;
  /** Most ranges per page (at least 1). */
  maxResults: number;
}

/** A run of bytes of a snapshot: [offset, offset + length). */
export interface EngineByteRange {
  offset: number;
  length: number;
}

/** One page of block metadata: ranges ascending, never overlapping, continuing the last page. */
export interface EngineBlockMetadataPage {
  /** Size of the (target) snapshot, the same on every page. */
  sizeBytes: number;
  ranges: EngineByteRange[];
}

export interface EngineApi {
  /** The node whose pool this engine serves ("cluster" for the engine over every node). */
  readonly nodeId: string;
  /** True once the pool is open and calls can succeed (CSI Probe). */
  isReady(): boolean;

  createVolume(options: EngineCreateVolumeOptions): Promise<EngineVolume>;
  /** undefined when there is no such volume. */
  getVolume(name: string): Promise<EngineVolume | undefined>;
  listVolumes(): Promise<EngineListing<EngineVolume>>;
  /** Grows a volume (volumes never shrink). */
  resizeVolume(name: string, sizeBytes: number): Promise<EngineVolume>;
  /**
   * Sets a volume's protection policy ("off" turns it off); INVALID_ARGUMENT for a bad policy,
   * NOT_FOUND for no such volume. Setting the policy it has changes nothing.
   */
  setProtection(name: string, policy: string): Promise<EngineVolume>;
  deleteVolume(name: string): Promise<void>;

  createSnapshot(options: EngineCreateSnapshotOptions): Promise<EngineSnapshot>;
  getSnapshot(name: string): Promise<EngineSnapshot | undefined>;
  listSnapshots(): Promise<EngineListing<EngineSnapshot>>;
  deleteSnapshot(name: string): Promise<void>;
  /**
   * Changed-block tracking: the allocated ranges of a snapshot, or the ranges where it differs
   * from a base snapshot, page by page as the caller asks for them (a slow reader holds nothing
   * but its place). 4 KiB granularity where a chunk was written in part, the chunk size
   * otherwise. At least one page, possibly with no ranges (its size). Errors, raised by the
   * first page: NOT_FOUND (either snapshot), INVALID_ARGUMENT (snapshots of different volumes,
   * maxResults < 1), OUT_OF_RANGE (startingOffset negative or past the snapshot's end).
   */
  blockMetadata(request: EngineBlockMetadataRequest): AsyncIterable<EngineBlockMetadataPage>;

  /**
   * Snapshots of several volumes of this node at one instant, in one commit: all or none, one
   * consistent cut. Idempotent by name (members that all exist already, each of its volume, are
   * returned; some existing is ALREADY_EXISTS). Filesystems are not frozen (docs/csi.md, "Group
   * snapshots").
   */
  createSnapshotGroup(options: EngineCreateSnapshotGroupOptions): Promise<EngineSnapshot[]>;
  /**
   * Holds new writes to these volumes of this node, the writes in flight drained, for at most
   * timeoutMs (then writes go on by themselves). CANCELLED (ABORTED) when they do not drain in time.
   */
  holdWrites(options: { volumes: string[]; timeoutMs: number }): Promise<{ holdId: string }>;
  /** Ends a hold. heldThroughout: it had not expired (an unknown hold: false). */
  releaseWrites(holdId: string): Promise<{ heldThroughout: boolean }>;
  /**
   * Group snapshot records, kept crash-safe with the node's metadata: small string maps by engine
   * name (the CSI layer decides what is in them). undefined when there is no such record.
   */
  putGroupRecord(name: string, record: EngineMeta): Promise<void>;
  getGroupRecord(name: string): Promise<EngineMeta | undefined>;
  deleteGroupRecord(name: string): Promise<void>;

  capacity(): Promise<EngineCapacity>;
  /** Who holds the pool's space: per pool, per volume, per snapshot (computed on demand). */
  space(): Promise<EngineSpace>;

  /*
   * Routing, so that the controller reads the same over one pool (local mode) and over many
   * (cluster mode): it resolves the node part of an id to an engine, lists node by node, and
   * asks where a new volume goes. A single-node engine answers with itself.
   */

  /** The engine holding node nodeId's pool, or undefined when this engine knows no such node. */
  engineFor(nodeId: string): EngineApi | undefined;
  /** Every node engine behind this one, in node id order (a single-node engine: itself). */
  nodeEngines(): EngineApi[];
  /**
   * The node engine a new volume goes to: the one already holding a volume of that name (a
   * retried CreateVolume), else one allowed by the request with room for it. Errors:
   * RESOURCE_EXHAUSTED when no allowed node can take it, CLOSED (UNAVAILABLE) when the allowed
   * nodes cannot be reached.
   */
  placeVolume(request: EnginePlacementRequest): Promise<EngineApi>;
}

/** A replica to make of another node's snapshot (EngineReplication.replicateSnapshot). */
export interface EngineReplicateOptions {
  /** The snapshot, "<node>/<engine name>". The replica's engine name is replicaName(origin). */
  origin: string;
  sizeBytes: number;
  /** Nodes holding the snapshot whole, in the order to try them. */
  holders: EngineHolder[];
  /**
   * An earlier snapshot of the same volume this node holds a complete replica of: only the
   * chunks that differ travel (incremental replication).
   */
  baseOrigin?: string;
  meta: EngineMeta;
}

/**
 * What a node's engine does for snapshots beyond its node (cross-node restore, replicas); the
 * controller calls it through the engine service. Separate from EngineApi: the CSI controller
 * never needs it.
 */
export interface EngineReplication {
  /** Starts a replica of another node's snapshot here; returns at once (the copy runs on). */
  replicateSnapshot(options: EngineReplicateOptions): Promise<EngineSnapshot>;
  /** Where content of `origin` can be fetched from now (a holder moved, went or came). */
  setHolders(origin: string, holders: EngineHolder[]): Promise<void>;
  /** Lets node `nodeId` read snapshot `name` of this node (it was asked to copy it). */
  grantPull(name: string, nodeId: string): Promise<void>;
  /** Remembers that these snapshots were deleted (a holder that was down learns it later). */
  addTombstones(tombstones: EngineTombstone[]): Promise<void>;
  listTombstones(): Promise<EngineTombstone[]>;
}

/**
 * A deleted snapshot. A name can be used again after a delete, so a tombstone says which
 * incarnation it buries: the deleted snapshot's engine id on its node (ids only grow), or, when
 * that was not known at the delete, the time of the delete.
 */
export interface EngineTombstone {
  origin: string;
  /** Engine id of the deleted snapshot on its node; 0: unknown. */
  id: number;
  deletedAtMs: number;
}
