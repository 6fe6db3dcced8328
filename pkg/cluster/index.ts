/**
 * pkg/cluster: snapblock in cluster mode (DESIGN.md section 1, docs/cluster.md). The engine
 * service (proto/engine.proto) that every node plugin serves over mutual TLS, the RemoteEngine
 * client that gives the controller an EngineApi for a node across the network, and placement of
 * volumes over many nodes. This is the module's only entry point.
 */
export { loadEngineProto, findEngineProto, type EngineProto } from "./engine-proto.js";
export type {
  WireNodeInfo as EngineNodeInfo,
  WireSnapshotChunk as SnapshotChunk,
} from "./engine-messages.js";
