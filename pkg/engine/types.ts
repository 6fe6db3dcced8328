/** Public shapes of the engine's API (see docs/engine-format.md for the on-disk side). */

/** One contiguous run of a device's address space with the same allocation state. */
export interface Extent {
  offset: number;
  length: number;
  /** false: a hole, which reads as zeroes and holds no chunk. */
  allocated: boolean;
}

export interface WriteOptions {
  /** Force unit access: the write is durable when the promise resolves. */
  fua?: boolean;
}

/**
 * Byte-addressed access to a volume (read-write) or a snapshot (read-only). This is what the NBD
 * server and the node plugin use; every method validates offset and length against `size`.
 */
export interface BlockDevice {
  readonly name: string;
  readonly kind: DeviceKind;
  readonly readOnly: boolean;
  /** Current size in bytes (a volume can grow while open). */
  readonly size: number;
  /** The pool's chunk size: the unit of allocation, sharing and trim. */
  readonly chunkSize: number;
  /**
   * Reads `length` bytes at `offset`; into `into` (its first `length` bytes, returned) when given,
   * so that a caller reading many chunks can reuse its buffers. `into` is not touched once the
   * promise settled (fulfilled or rejected).
   */
  read(offset: number, length: number, into?: Buffer): Promise<Buffer>;
  /** Reads `data` only until the promise settles (fulfilled or rejected): the caller may reuse it then. */
  write(offset: number, data: Buffer, options?: WriteOptions): Promise<void>;
  /** Makes every write completed before the call durable (NBD_CMD_FLUSH semantics). */
  flush(): Promise<void>;
  /** Discard: whole chunks go back to the pool, partial chunks are zeroed. Reads return zeroes after. */
  trim(offset: number, length: number, options?: WriteOptions): Promise<void>;
  /** Zeroes a range; whole chunks become holes (space given back), partial chunks are written. */
  writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void>;
  /** Allocation map of a range, answered from metadata alone. */
  extents(offset: number, length: number): Extent[];
}

export type DeviceKind = "volume" | "snapshot";

export interface SpaceUsage {
  /** Bytes of chunks this device maps. */
  totalBytes: number;
  /** Bytes of chunks only this device maps: what deleting it would give back. */
  exclusiveBytes: number;
  /** Bytes of chunks this device shares with at least one other volume or snapshot. */
  sharedBytes: number;
}

export interface VolumeInfo {
  kind: "volume";
  id: number;
  name: string;
  sizeBytes: number;
  createdAt: Date;
  /** Snapshot or volume this volume was restored or cloned from, if any (by name at creation). */
  source?: { kind: DeviceKind; name: string };
  /** Present while (or since) a full background copy runs for this volume. */
  copy?: CopyProgress;
  /** Present while some of its content is still to arrive from elsewhere (a cross-node restore). */
  pending?: PendingInfo;
  /** Its protection policy (recovery points), canonical text; absent: off. */
  protection?: string;
}

/** Content of a device still to arrive from `source` (pending-chunks.ts). */
export interface PendingInfo {
  source: string;
  /** Chunks not here yet. */
  chunks: number;
  /** Chunks that were pending when the device was made. */
  totalChunks: number;
}

export interface SnapshotInfo {
  kind: "snapshot";
  id: number;
  name: string;
  sizeBytes: number;
  createdAt: Date;
  /** The volume the snapshot was taken of (its name at snapshot time). */
  sourceVolume: string;
  sourceVolumeId: number;
  /** Present while some of its content is still to arrive from elsewhere (a replica being made). */
  pending?: PendingInfo;
  /** A recovery point (taken on the volume's protection policy), not a user's snapshot. */
  point?: boolean;
  /** A pinned recovery point (Pool.pinPoint): exported as a user's snapshot, never thinned. */
  pinned?: boolean;
}

/**
 * Per-volume snapshot limits (as Longhorn's): CreateSnapshot is refused with NO_SPACE when the
 * volume is at one of them. Checked atomically with the snapshot's creation.
 */
export interface SnapshotLimits {
  /** Most snapshots the volume may have; a new one is refused when it has this many. */
  maxSnapshots?: number;
  /**
   * Most bytes its snapshots may hold that nothing else maps (VolumeSpace.snapshotOnlyBytes); a
   * new snapshot is refused when they hold this much or more.
   */
  maxSnapshotBytes?: number;
  /** How each limit is named in the refusal (e.g. the StorageClass parameter that set it). */
  names?: { maxSnapshots?: string; maxSnapshotBytes?: string };
}

export interface CopyProgress {
  state: "running" | "done" | "cancelled" | "failed";
  copiedChunks: number;
  totalChunks: number;
  error?: string;
}

/** A volume's space: its own usage, and what its snapshots hold (space-accounting.ts). */
export interface VolumeSpace extends SpaceUsage {
  name: string;
  sizeBytes: number;
  /**
   * Bytes of chunks that only this volume's snapshots map (one or several of them): what
   * deleting all of its snapshots would give back.
   */
  snapshotOnlyBytes: number;
  /** Snapshots taken of this volume that still exist (its recovery points included). */
  snapshotCount: number;
  /** Its recovery points (snapshots on its protection policy). */
  pointCount: number;
  /** Its protection policy, canonical text; absent: off. */
  protection?: string;
  /**
   * With a policy: seconds its newest content has had no recovery point (0 while nothing was
   * written since its newest point; Pool.protectionLag).
   */
  protectionLagSeconds?: number;
}

export interface SnapshotSpace extends SpaceUsage {
  name: string;
  sizeBytes: number;
  sourceVolume: string;
}

export interface PoolStats {
  chunkSize: number;
  sizeBytes: number;
  allocatedBytes: number;
  freeBytes: number;
  /** Sum of the volumes' sizes (thin provisioning: may exceed sizeBytes when overcommitted). */
  provisionedBytes: number;
  /**
   * Bytes no table maps that partial chunks still read from; the background filler gives them
   * back (space-accounting.ts). allocated = exclusive (all devices) + shared + reclaimable.
   */
  reclaimableBytes: number;
  /** Space needed by running full copies that they have not taken yet (held back for them). */
  copyReservedBytes: number;
  volumes: VolumeSpace[];
  snapshots: SnapshotSpace[];
  /** Bytes of pool metadata held in memory (chunk tables and reference counts). */
  metadataBytes: number;
  /** Chunks mapped by more than one volume or snapshot (shared) and by exactly one (exclusive). */
  sharedChunks: number;
  exclusiveChunks: number;
  /** Partial chunks waiting for the background filler. */
  partialChunks: number;
  /** Background full copies running or finished since the pool opened. */
  copies: Array<{ volume: string } & CopyProgress>;
  /** The last consistency check, if one ran since the pool opened. */
  lastCheck?: { at: Date; ok: boolean; problems: number };
}

export interface CheckReport {
  ok: boolean;
  chunksInUse: number;
  chunksFree: number;
  problems: string[];
}

/** A set of chunk indexes of a device (logical chunk numbers, ascending). */
export interface ChunkList {
  chunkSize: number;
  chunks: number[];
}

export type DataOp = "read" | "write" | "trim" | "zero" | "flush";

/**
 * Hooks for metrics (pkg/metrics implements them; the engine imports no metrics library). Calls
 * are synchronous and on the I/O path: implementations must be cheap and must not throw.
 */
export interface EngineObserver {
  /** A data operation on an open volume or snapshot finished (`error` set if it failed). */
  ioCompleted?: (event: {
    device: string;
    kind: DeviceKind;
    op: DataOp;
    bytes: number;
    seconds: number;
    error?: string;
  }) => void;
  /**
   * A write took new chunks. `shared`: redirect-on-write of chunks that were mapped and shared
   * (`full` whole chunks, `partial` only the written blocks, `merged` a partial chunk rewritten
   * whole). `fresh`: first writes into unallocated chunks (thin provisioning), whole or partial.
   */
  redirected?: (event: {
    device: string;
    shared: { full: number; partial: number; merged: number };
    fresh: { full: number; partial: number };
  }) => void;
  /** A commit (flush of data and metadata) finished. */
  committed?: (event: { records: number; seconds: number }) => void;
  /**
   * A pending chunk arrived and was filled (`bytes` 0: it was a hole). `onDemand`: a read or a
   * partial write waited for it; otherwise the background pull brought it.
   */
  chunkFilled?: (event: { source: string; bytes: number; onDemand: boolean }) => void;
  /** Nothing is pending from `source` any more: what its pull fetched, and how long it took. */
  pullFinished?: (event: { source: string; chunks: number; bytes: number; seconds: number }) => void;
  /**
   * The pool's use crossed a level (POOL_USAGE_LEVELS: 80, 90, 100 percent, or 0 below them),
   * up or down. `full` is true when a write was refused for lack of space.
   */
  usageLevel?: (event: PoolUsageEvent) => void;
  /** The point scheduler took a recovery point of a volume (recovery-points.ts). */
  pointTaken?: (event: { volume: string; name: string }) => void;
  /**
   * Recovery points of a volume were deleted: `thinning` by its policy, or `space` because the
   * points held more than their share of the pool's free space (oldest first; `heldBytes` and
   * `budgetBytes` say how far over they were).
   */
  pointsDeleted?: (event: PointsDeletedEvent) => void;
}

export interface PointsDeletedEvent {
  volume: string;
  count: number;
  reason: "thinning" | "space";
  /** With reason "space": bytes all points held before, and what they may hold. */
  heldBytes?: number;
  budgetBytes?: number;
}

/** Levels of pool use, in percent of its chunks, that are reported when crossed. */
export const POOL_USAGE_LEVELS = [80, 90, 100] as const;

export interface PoolUsageEvent {
  /** The highest level reached (0: below the first). */
  level: number;
  previous: number;
  usedBytes: number;
  sizeBytes: number;
  /** A write was refused with NO_SPACE. */
  full: boolean;
}
