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
