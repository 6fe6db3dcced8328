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

export interface KubeApi {
  listNodes(): Promise<KubeNode[]>;
  /** Merge-patches annotations of a Node (null removes one). */
  patchNodeAnnotations(name: string, annotations: Record<string, string | null>): Promise<void>;
  getLease(namespace: string, name: string): Promise<KubeLease | undefined>;
  createLease(lease: KubeLease): Promise<KubeLease>;
  /** Replaces a Lease; BUSY when its resourceVersion is no longer current. */
  replaceLease(lease: KubeLease): Promise<KubeLease>;
  createEvent(event: KubeEvent): Promise<void>;
}
