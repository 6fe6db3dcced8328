/**
 * snapblock's block engine: thin pools of reference-counted chunks, volumes and snapshots as
 * chunk tables with shared structure, redirect-on-write, instant restores and clones, background
 * full copies, and crash-safe metadata (checkpoint + journal). No gRPC, Kubernetes or Prometheus
 * here: the NBD server and the CSI services use this API in-process.
 */
export { Pool, DEFAULT_CHUNK_SIZE } from "./pool.js";
export type {
  AnnotationChanges,
  CreateOptions,
  PoolOptions,
  PoolCreateOptions,
  RestoreOptions,
  PointSpace,
  SnapshotOptions,
} from "./pool.js";
export type { StringMap } from "./string-maps.js";
export { WriteHold } from "./write-hold.js";
export { SpaceMemo, accountSpace, accountSpaceSliced, type SpaceAccount } from "./space-accounting.js";
export { POOL_USAGE_LEVELS } from "./types.js";
export {
  PointScheduler,
  DEFAULT_POINT_SHARE,
  nextTickDelay,
  type PointSchedulerOptions,
  type TickReport,
} from "./recovery-points.js";
export {
  parseProtectionPolicy,
  formatDuration,
  type ProtectionPolicy,
  type ProtectionTier,
} from "./protection-policy.js";
export { pointsToKeep } from "./point-retention.js";
export { POINT_PREFIX, isPointName } from "./point-names.js";
export type {
  BlockDevice,
  CheckReport,
  ChunkList,
  CopyProgress,
  DataOp,
  DeviceKind,
  EngineObserver,
  Extent,
  PendingInfo,
  PoolStats,
  PoolUsageEvent,
  PointsDeletedEvent,
  SnapshotInfo,
  SnapshotLimits,
  SnapshotSpace,
  SpaceUsage,
  VolumeSpace,
  VolumeInfo,
  WriteOptions,
} from "./types.js";
export type { Storage, StorageFile } from "./storage.js";
export { BlockRangeCursor, type ByteRange } from "./block-ranges.js";
export type { ChunkFetcher, FetchedChunk, PullOptions, PullProgress, PullState } from "./pending-fill.js";
export { NodeStorage, type DataIo, type IoMode, type NodeStorageOptions } from "./node-storage.js";
export { FaultStorage, PowerLossError, type FaultImage, type FaultStorageOptions } from "./fault-storage.js";
export { Prng } from "./prng.js";
export { validateName, validateSize, MAX_DEVICE_BYTES } from "./names.js";
