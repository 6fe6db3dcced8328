/**
 * pkg/csi: the Container Storage Interface services of snapblock (docs/design.md section 4) on a unix
 * socket with @grpc/grpc-js: Identity, Controller (over the EngineApi, in-process or remote) and
 * Node (validation and locking here, the data path behind NodeVolumeManager). See docs/csi.md.
 * This is the module's only entry point.
 */
export { CsiServer, type CsiServerOptions } from "./csi-server.js";
export {
  identityHandlers,
  validatePluginName,
  DEFAULT_PLUGIN_NAME,
  type IdentityOptions,
} from "./identity-service.js";
export {
  controllerHandlers,
  CONTROLLER_CAPABILITIES,
  GROUP_CONTROLLER_CAPABILITIES,
  type ControllerOptions,
  type ControllerServices,
} from "./controller-service.js";
export {
  NodeService,
  NODE_CAPABILITIES,
  type NodeEngine,
  type NodeOptions,
  type NodeVolumeSource,
} from "./node-service.js";
export {
  snapshotMetadataHandlers,
  DEFAULT_MAX_RESULTS,
  MAX_RESULTS_CAP,
  type SnapshotMetadataOptions,
} from "./snapshot-metadata-service.js";
export {
  unavailableNodeVolumeManager,
  type NodeVolumeManager,
  type NodeVolumeRef,
  type NodeStageOptions,
  type NodeUnstageOptions,
  type NodePublishOptions,
  type NodeUnpublishOptions,
  type NodeStatsOptions,
  type NodeVolumeStats,
  type NodeVolumeUsage,
  type NodeExpandOptions,
} from "./node-volume-manager.js";
export { connectCsi, callCsi, type CsiClients } from "./csi-client.js";
export { loadCsiProto } from "./csi-proto.js";
export { socketPathOf, grpcUnixAddress } from "./unix-endpoint.js";
export { formatResourceId, parseResourceId, type ResourceId } from "./resource-id.js";
export { engineNameFor } from "./engine-names.js";
export { TOPOLOGY_KEY } from "./topology.js";
export {
  PARAM_FREEZE,
  PARAM_GROUP_HOLD_TIMEOUT,
  PARAM_FS_TYPE,
  PARAM_FULL_COPY,
  PARAM_MAX_SNAPSHOTS,
  PARAM_MAX_SNAPSHOT_SPACE,
  PARAM_ALLOW_MODE_CHANGE,
} from "./storage-class-parameters.js";
export { CONTEXT_FS_TYPE, CONTEXT_VOLUME_MODE, volumeFacts, type VolumeFacts } from "./volume-view.js";
export { RAW_USE_META, snapshotDataMode, type DataMode } from "./volume-mode.js";
export { DEFAULT_VOLUME_BYTES } from "./capacity-range.js";
export {
  capabilityMessage,
  SUPPORTED_FS_TYPES,
  type Capability,
  type FsType,
  type AccessMode,
} from "./volume-capabilities.js";
export type { ProtoGrpcType as CsiProto } from "./generated/csi.js";
export type { Volume as CsiVolume, Volume__Output as CsiVolumeOutput } from "./generated/csi/v1/Volume.js";
export type {
  Snapshot as CsiSnapshot,
  Snapshot__Output as CsiSnapshotOutput,
} from "./generated/csi/v1/Snapshot.js";
