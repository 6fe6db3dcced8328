/**
 * pkg/k8s: what snapblock does with the Kubernetes API, behind the small plain-data KubeApi
 * interface (KubeClient implements it with @kubernetes/client-node, loaded only when used): the
 * node's announcement on its Node object, node discovery from those announcements, Lease leader
 * election, Events, scheduled VolumeSnapshots (SnapshotSchedule), and the pins of recovery points
 * that VolumeSnapshotContents name. See docs/cluster.md, docs/snapshot-schedules.md and
 * docs/protection.md. This is the module's only entry point.
 */
export type {
  KubeApi,
  KubeEvent,
  KubeLease,
  KubeNode,
  KubeOwnerReference,
  KubePvc,
  KubeSnapshotSchedule,
  KubeVolumeSnapshot,
  KubeVolumeSnapshotContent,
  LabelSelector,
  SnapshotScheduleStatus,
} from "./kube-api.js";
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
export { KubeEventRecorder, type KubeEventRecorderOptions } from "./kube-events.js";
export {
  SnapshotSchedules,
  type ScheduleOutcome,
  type SnapshotSchedulesOptions,
} from "./snapshot-schedules.js";
export {
  SCHEDULE_API,
  SCHEDULE_LABEL,
  PVC_LABEL,
  PVC_ANNOTATION,
  SCHEDULED_AT_ANNOTATION,
  parseScheduleSpec,
  scheduledSnapshotName,
} from "./snapshot-schedule-spec.js";
export {
  ExportedPointPins,
  type ExportedPointPinsOptions,
  type PointPinner,
  type PointPinsPass,
} from "./exported-point-pins.js";
export { retentionDeletes, type RetainedSnapshot, type RetentionPolicy } from "./schedule-retention.js";
export { matchesSelector, selectorString } from "./label-selector.js";
export type { KubeCsr } from "./kube-api.js";
export { CsrSigner, ENGINE_SIGNER, NODE_NAME_EXTRA, type CsrSignerOptions } from "./csr-signer.js";
export { NodeCertificate, type NodeCertificateOptions } from "./node-certificate.js";
