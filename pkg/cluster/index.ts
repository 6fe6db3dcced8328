/**
 * pkg/cluster: snapblock in cluster mode (DESIGN.md section 1, docs/cluster.md). The engine
 * service (proto/engine.proto) that every node plugin serves over mutual TLS, the RemoteEngine
 * client that gives the controller an EngineApi for a node across the network, and placement of
 * volumes over many nodes. This is the module's only entry point.
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
export { loadEngineProto, findEngineProto, type EngineProto } from "./engine-proto.js";
export type {
  WireNodeInfo as EngineNodeInfo,
  WireSnapshotChunk as SnapshotChunk,
} from "./engine-messages.js";
export { MAX_CHUNK_MESSAGE_BYTES, type SnapshotOpener } from "./snapshot-chunks.js";
export { ClusterEngine, type ClusterEngineOptions, type NodeEngine } from "./cluster-engine.js";
export {
  FileNodeDiscovery,
  StaticNodeDiscovery,
  parseNodeList,
  type NodeDiscovery,
  type NodeEndpoint,
} from "./node-discovery.js";
export { rankByRendezvous, rendezvousScore, type WeightedNode } from "./rendezvous-hashing.js";
export type { KubeApi, KubeEvent, KubeLease, KubeNode, KubeObjectRef } from "./kube-api.js";
export { connectKube } from "./kube-connect.js";
export { KubernetesNodeDiscovery, type KubernetesNodeDiscoveryOptions } from "./kube-node-discovery.js";
export {
  ANNOTATION,
  NodeAnnouncer,
  readAnnouncement,
  type NodeAnnouncement,
  type NodeAnnouncerOptions,
} from "./node-announcement.js";
export { LeaseElection, type LeaseElectionOptions } from "./lease-election.js";
export {
  KubeEventRecorder,
  pvcOf,
  volumeSnapshotOf,
  type EventRecorder,
  type KubeEventRecorderOptions,
} from "./kube-events.js";
