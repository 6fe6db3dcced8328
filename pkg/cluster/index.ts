/**
 * pkg/cluster: snapblock over many nodes (docs/cluster.md): the ClusterEngine that routes the
 * controller's EngineApi calls to the node holding each volume and places new volumes (topology,
 * else weighted rendezvous hashing), node discovery, and the Events its long operations raise
 * (through the EventRecorder interface; pkg/k8s implements it). This is the module's only entry
 * point.
 */
export { ClusterEngine, type ClusterEngineOptions, type NodeEngine } from "./cluster-engine.js";
export {
  FileNodeDiscovery,
  StaticNodeDiscovery,
  parseNodeList,
  type NodeDiscovery,
  type NodeEndpoint,
} from "./node-discovery.js";
export { rankByRendezvous, rendezvousScore, type WeightedNode } from "./rendezvous-hashing.js";
export { pvcOf, volumeSnapshotOf, type EventRecorder, type ObjectRef } from "./event-recorder.js";
export {
  Replicator,
  splitOrigin,
  type ClusterView,
  type ReplicaNode,
  type ReplicationObserver,
  type ReplicationStatus,
  type ReplicatorOptions,
} from "./replicator.js";
export { PoolUsageEvents, type PoolUsageEventsOptions } from "./pool-usage-events.js";
