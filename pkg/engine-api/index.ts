/**
 * pkg/engine-api: what the CSI controller (and the engine service) need from a node's engine, as
 * one interface with two implementations (local mode and cluster mode read the same):
 * LocalEngine over an in-process pool here, and the engine service's gRPC client in
 * pkg/engine-service. Also node ids, which name where a pool lives. This is the module's only
 * entry point.
 */
export type {
  EngineApi,
  EngineBlockMetadataPage,
  EngineBlockMetadataRequest,
  EngineByteRange,
  EngineCapacity,
  EngineCopyProgress,
  EngineCreateSnapshotOptions,
  EngineCreateSnapshotGroupOptions,
  EngineGroupMember,
  EngineCreateVolumeOptions,
  EngineDeviceKind,
  EngineHolder,
  EnginePullProgress,
  EngineReplicateOptions,
  EngineReplication,
  EngineTombstone,
  EngineListing,
  EngineMeta,
  EnginePlacementRequest,
  EnginePointPins,
  EngineSnapshot,
  EngineSnapshotLimits,
  EngineSnapshotSpace,
  EngineSpace,
  EngineVolume,
  EngineVolumeSpace,
  VolumeQuiescer,
  AttachmentHealthSource,
} from "./engine-api.js";
export { DEFAULT_GROUP_HOLD_MS, PVC_META } from "./engine-api.js";
export { snapshotGroupAcrossNodes, type GroupPart } from "./group-cut.js";
export {
  LocalEngine,
  type LocalEngineOptions,
  type RemoteContent,
  type VolumeDevice,
} from "./local-engine.js";
export { MetadataStore } from "./metadata-store.js";
export { META_KEY_MAX_BYTES, META_MAX_BYTES, checkEngineMeta } from "./engine-meta.js";
export { NODE_ID_MAX, isNodeId, validateNodeId } from "./node-id.js";
export { REPLICA_META, cloneSourceName, replicaName } from "./replica-name.js";
export { MAX_DEVICE_BYTES as MAX_VOLUME_BYTES, POOL_USAGE_LEVELS } from "../engine/index.js";
/** The policy grammar is the engine's; the CSI layer validates parameters with it before any call. */
export { parseProtectionPolicy, POINT_PREFIX } from "../engine/index.js";
