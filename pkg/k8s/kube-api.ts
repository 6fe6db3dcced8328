import type { ObjectRef } from "../cluster/index.js";

/**
 * The small part of the Kubernetes API that snapblock uses, as plain data. The production
 * implementation (kube-client.ts) wraps @kubernetes/client-node; the logic on top (discovery,
 * node announcement, leader election, events) is tested against fakes of this interface.
 *
 * Errors are SnapblockErrors: NOT_FOUND (404), ALREADY_EXISTS (409 on create), BUSY (409 on
 * update: someone else changed the object first), CLOSED (the API server cannot be reached).
 */
export interface KubeNode {
  name: string;
  annotations: Record<string, string>;
  labels: Record<string, string>;
}

export interface KubeLease {
  name: string;
  namespace: string;
  /** Opaque version for optimistic concurrency; absent on create. */
  resourceVersion?: string;
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: Date;
  renewTime?: Date;
  leaseTransitions?: number;
}

export interface KubeEvent {
  involved: ObjectRef;
  type: "Normal" | "Warning";
  /** UpperCamelCase, e.g. PlacementFailed, CopyStarted. */
  reason: string;
  message: string;
  /** Who reports: the component name. */
  source: string;
  time: Date;
}

/** A Kubernetes label selector (metav1.LabelSelector): every requirement must hold. */
export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: Array<{ key: string; operator: string; values?: string[] }>;
}

/** A SnapshotSchedule (snapblock.dev/v1alpha1) as read: the spec raw, validated by its reader. */
export interface KubeSnapshotSchedule {
  namespace: string;
  name: string;
  uid: string;
  generation: number;
  creationTimestamp: Date;
  spec: unknown;
  status?: SnapshotScheduleStatus;
}

/** What the reconciler records on a SnapshotSchedule (its status subresource). */
export interface SnapshotScheduleStatus {
  /** The schedule time whose snapshots were all created (RFC 3339). */
  lastScheduleTime?: string;
  /** When the newest VolumeSnapshot of the schedule was created. */
  lastSnapshotTime?: string;
  nextSnapshotTime?: string;
  /** VolumeSnapshots the schedule owns now. */
  snapshotCount?: number;
  /** PVCs the selector picks (bound ones, which can be snapshotted). */
  selectedPVCs?: number;
  /** Empty when the last reconcile went well. */
  lastError?: string;
  observedGeneration?: number;
}

export interface KubePvc {
  namespace: string;
  name: string;
  uid: string;
  labels: Record<string, string>;
  /** Pending, Bound or Lost. */
  phase: string;
  /** Being deleted (deletionTimestamp set). */
  deleting: boolean;
}

export interface KubeOwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
}

/** A VolumeSnapshot (snapshot.storage.k8s.io/v1), the fields snapblock reads and writes. */
export interface KubeVolumeSnapshot {
  namespace: string;
  name: string;
  /** Set by the API server. */
  uid?: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  ownerReferences: KubeOwnerReference[];
  /** spec.source.persistentVolumeClaimName */
  pvcName: string;
  /** spec.volumeSnapshotClassName (absent: the default class). */
  className?: string;
  creationTimestamp?: Date;
  /** status.readyToUse */
  readyToUse?: boolean;
  /** status.error.message */
  error?: string;
}

/**
 * A VolumeSnapshotContent (snapshot.storage.k8s.io/v1, cluster-scoped), the fields snapblock
 * reads: whose driver it is and, for a pre-provisioned one, which snapshot it names.
 */
export interface KubeVolumeSnapshotContent {
  name: string;
  /** Set by the API server. */
  uid: string;
  /** spec.driver */
  driver: string;
  /**
   * spec.source.snapshotHandle: the snapshot id of a pre-provisioned content (written by a user,
   * `snapblock volume points --kubernetes` or a backup tool). Absent on one csi-snapshotter made
   * for a new snapshot (its id is in status.snapshotHandle).
   */
  snapshotHandle?: string;
  /** spec.deletionPolicy: Delete or Retain. */
  deletionPolicy: string;
  /** Being deleted (deletionTimestamp set). */
  deleting: boolean;
}

/** A CertificateSigningRequest (certificates.k8s.io/v1), as the signer and the requester see it. */
export interface KubeCsr {
  name: string;
  signerName: string;
  /** The PKCS#10 request, PEM. */
  requestPem: string;
  usages: string[];
  expirationSeconds?: number;
  /** Who created it, as the API server authenticated them (set by the server, not the requester). */
  username?: string;
  extra?: Record<string, string[]>;
  approved?: boolean;
  denied?: boolean;
  failed?: boolean;
  /** The message of the Approved or Denied condition (why a request was denied). */
  message?: string;
  /** The issued certificate, PEM, once the signer has signed. */
  certificatePem?: string;
}

export interface KubeApi {
  listNodes(): Promise<KubeNode[]>;
  /** Merge-patches annotations of a Node (null removes one). */
  patchNodeAnnotations(name: string, annotations: Record<string, string | null>): Promise<void>;
  getLease(namespace: string, name: string): Promise<KubeLease | undefined>;
  createLease(lease: KubeLease): Promise<KubeLease>;
  /** Replaces a Lease; BUSY when its resourceVersion is no longer current. */
  replaceLease(lease: KubeLease): Promise<KubeLease>;
  createEvent(event: KubeEvent): Promise<void>;

  /** Every SnapshotSchedule of the cluster. */
  listSnapshotSchedules(): Promise<KubeSnapshotSchedule[]>;
  /** Merge-patches the status subresource of a SnapshotSchedule. */
  patchSnapshotScheduleStatus(namespace: string, name: string, status: SnapshotScheduleStatus): Promise<void>;
  /** The PVCs of a namespace that a selector picks. */
  listPvcs(namespace: string, selector: LabelSelector): Promise<KubePvc[]>;
  /** The VolumeSnapshots of a namespace carrying all of `labels`. */
  listVolumeSnapshots(namespace: string, labels: Record<string, string>): Promise<KubeVolumeSnapshot[]>;
  /** ALREADY_EXISTS when the name is taken. */
  createVolumeSnapshot(snapshot: KubeVolumeSnapshot): Promise<KubeVolumeSnapshot>;
  /**
   * Deletes a VolumeSnapshot only if it is still the object `uid` names (a precondition: one
   * deleted and re-created under the same name meanwhile is left alone). NOT_FOUND when gone.
   */
  deleteVolumeSnapshot(namespace: string, name: string, uid: string): Promise<void>;
  /** Every VolumeSnapshotContent of the cluster (of every driver: the API cannot select by one). */
  listVolumeSnapshotContents(): Promise<KubeVolumeSnapshotContent[]>;
  /** Creates a CSR (ALREADY_EXISTS when the name is taken). */
  createCsr(
    csr: Pick<KubeCsr, "name" | "signerName" | "requestPem" | "usages" | "expirationSeconds">,
  ): Promise<void>;
  getCsr(name: string): Promise<KubeCsr | undefined>;
  /** The CSRs addressed to one signer. */
  listCsrs(signerName: string): Promise<KubeCsr[]>;
  /** Adds the Approved or Denied condition (the approval subresource). */
  decideCsr(name: string, decision: { approved: boolean; reason: string; message: string }): Promise<void>;
  /** Sets status.certificate (the status subresource): what a signer does once it has signed. */
  setCsrCertificate(name: string, certificatePem: string): Promise<void>;
  /** Creates or replaces a ConfigMap's data. */
  putConfigMap(namespace: string, name: string, data: Record<string, string>): Promise<void>;
}
