/**
 * pkg/engine-service: snapblock's engine service (proto/engine.proto), which every node serves
 * over mutual TLS: the server over a node's EngineApi, the RemoteEngine client that gives the
 * controller (and other nodes) an EngineApi across the network, the wire messages, the error
 * mapping both ways, and TLS. See docs/cluster.md. This is the module's only entry point.
 */
export { EngineServer, type EngineServerOptions } from "./engine-server.js";
export { RemoteEngine, type RemoteEngineOptions } from "./remote-engine.js";
export {
  checkOwnCertificate,
  isLoopbackHost,
  parseHostPort,
  readTls,
  type EngineTransportOptions,
  type HostPort,
  type TlsFiles,
  type TlsMaterial,
  type TlsPem,
  type TlsSource,
} from "./engine-tls.js";
export {
  describeIdentity,
  identityOfCertificate,
  identityUri,
  type EngineIdentity,
} from "./engine-identity.js";
export type { PullGrants } from "./engine-access.js";
export {
  certificateFacts,
  createCa,
  createKeyAndRequest,
  issueOwnCertificate,
  readRequest,
  signRequest,
  type PemPair,
} from "./certificates.js";
export { loadEngineProto, type EngineProto } from "./engine-proto.js";
export { fromEngineStatus, toEngineStatus } from "./engine-status.js";
export type {
  WireNodeInfo as EngineNodeInfo,
  WireSnapshotChunk as SnapshotChunk,
} from "./engine-messages.js";
export { MAX_CHUNK_MESSAGE_BYTES, type SnapshotOpener } from "./snapshot-chunks.js";
export { fetchSpace, spaceService, spaceServiceHandlers, type NodeSpaceReport } from "./space-service.js";
export { HolderContent, nameOn, type HolderContentOptions } from "./holder-content.js";
export {
  CHUNK_CHANNEL_PROTOCOL,
  ChunkChannelClient,
  ChunkChannelUnsupported,
  type ChunkChannelClientOptions,
} from "./chunk-channel.js";
