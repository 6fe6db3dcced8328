/**
 * pkg/engine-service: snapblock's engine service (proto/engine.proto), which every node serves
 * over mutual TLS: the server over a node's EngineApi, the RemoteEngine client that gives the
 * controller (and other nodes) an EngineApi across the network, the wire messages, the error
 * mapping both ways, and TLS. See docs/cluster.md. This is the module's only entry point.
 */
export { EngineServer, type EngineServerOptions } from "./engine-server.js";
export { RemoteEngine, type RemoteEngineOptions } from "./remote-engine.js";
export {
  isLoopbackHost,
  parseHostPort,
  type EngineTransportOptions,
  type HostPort,
  type TlsFiles,
} from "./engine-tls.js";
export { loadEngineProto, type EngineProto } from "./engine-proto.js";
export type {
  WireNodeInfo as EngineNodeInfo,
  WireSnapshotChunk as SnapshotChunk,
} from "./engine-messages.js";
export { MAX_CHUNK_MESSAGE_BYTES, type SnapshotOpener } from "./snapshot-chunks.js";
export { fetchSpace, spaceService, spaceServiceHandlers, type NodeSpaceReport } from "./space-service.js";
