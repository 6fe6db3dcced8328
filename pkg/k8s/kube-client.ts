import {
  ApiException,
  CertificatesV1Api,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  V1MicroTime,
  setHeaderOptions,
  type V1CertificateSigningRequest,
  type V1Lease,
} from "@kubernetes/client-node";
import { SnapblockError } from "../errors/index.js";
import type {
  KubeApi,
  KubeCsr,
  KubeEvent,
  KubeLease,
  KubeNode,
  KubePvc,
  KubeSnapshotSchedule,
  KubeVolumeSnapshot,
  KubeVolumeSnapshotContent,
  LabelSelector,
  SnapshotScheduleStatus,
} from "./kube-api.js";
import { selectorString } from "./label-selector.js";
import { SCHEDULE_API } from "./snapshot-schedule-spec.js";

/** snapshot.storage.k8s.io/v1 VolumeSnapshot, as external-snapshotter defines it. */
const VOLUME_SNAPSHOT = {
  group: "snapshot.storage.k8s.io",
  version: "v1",
  plural: "volumesnapshots",
} as const;
const VOLUME_SNAPSHOT_CONTENT = {
  group: "snapshot.storage.k8s.io",
  version: "v1",
  plural: "volumesnapshotcontents",
} as const;
const SCHEDULE = {
  group: SCHEDULE_API.group,
  version: SCHEDULE_API.version,
  plural: SCHEDULE_API.plural,
} as const;
/** Every status field, so that a merge patch can clear one (null) that is no longer true. */
const STATUS_FIELDS: Array<keyof SnapshotScheduleStatus> = [
  "lastScheduleTime",
  "lastSnapshotTime",
  "nextSnapshotTime",
  "snapshotCount",
  "selectedPVCs",
  "lastError",
  "observedGeneration",
];

/**
 * KubeApi over @kubernetes/client-node: in-cluster service account when running in a pod,
 * otherwise the kubeconfig (KUBECONFIG or ~/.kube/config), as kubectl does. The conversion to
 * and from plain data happens here so that nothing else sees client-node types.
 */
export class KubeClient implements KubeApi {
  private readonly core: CoreV1Api;
  private readonly coordination: CoordinationV1Api;
  private readonly custom: CustomObjectsApi;
  private readonly certificates: CertificatesV1Api;

  constructor(config?: KubeConfig) {
    const kc = config ?? defaultConfig();
    this.core = kc.makeApiClient(CoreV1Api);
    this.coordination = kc.makeApiClient(CoordinationV1Api);
    this.certificates = kc.makeApiClient(CertificatesV1Api);
    this.custom = kc.makeApiClient(CustomObjectsApi);
  }

  async listSnapshotSchedules(): Promise<KubeSnapshotSchedule[]> {
    const list = (await call("listing SnapshotSchedules", () =>
      this.custom.listClusterCustomObject({ ...SCHEDULE }),
    )) as { items?: RawObject[] };
    return (list.items ?? []).map((o) => ({
      namespace: o.metadata?.namespace ?? "",
      name: o.metadata?.name ?? "",
      uid: o.metadata?.uid ?? "",
      generation: o.metadata?.generation ?? 0,
      creationTimestamp: new Date(o.metadata?.creationTimestamp ?? 0),
      spec: o.spec,
      ...(o.status ? { status: o.status } : {}),
    }));
  }

  async patchSnapshotScheduleStatus(
    namespace: string,
    name: string,
    status: SnapshotScheduleStatus,
  ): Promise<void> {
    const body = { status: Object.fromEntries(STATUS_FIELDS.map((k) => [k, status[k] ?? null])) };
    await call(
      `recording the status of SnapshotSchedule ${namespace}/${name}`,
      () =>
        this.custom.patchNamespacedCustomObjectStatus(
          { ...SCHEDULE, namespace, name, body },
          setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
        ),
      "update",
    );
  }

  async listPvcs(namespace: string, selector: LabelSelector): Promise<KubePvc[]> {
    const list = await call(`listing PVCs in ${namespace}`, () =>
      this.core.listNamespacedPersistentVolumeClaim({ namespace, labelSelector: selectorString(selector) }),
    );
    return list.items.map((p) => ({
      namespace,
      name: p.metadata?.name ?? "",
      uid: p.metadata?.uid ?? "",
      labels: { ...(p.metadata?.labels ?? {}) },
      phase: p.status?.phase ?? "",
      deleting: p.metadata?.deletionTimestamp !== undefined,
    }));
  }

  async listVolumeSnapshots(
    namespace: string,
    labels: Record<string, string>,
  ): Promise<KubeVolumeSnapshot[]> {
    const list = (await call(`listing VolumeSnapshots in ${namespace}`, () =>
      this.custom.listNamespacedCustomObject({
        ...VOLUME_SNAPSHOT,
        namespace,
        labelSelector: selectorString({ matchLabels: labels }),
      }),
    )) as { items?: RawObject[] };
    return (list.items ?? []).map(fromVolumeSnapshot);
  }

  async createVolumeSnapshot(s: KubeVolumeSnapshot): Promise<KubeVolumeSnapshot> {
    const body = {
      apiVersion: `${VOLUME_SNAPSHOT.group}/${VOLUME_SNAPSHOT.version}`,
      kind: "VolumeSnapshot",
      metadata: {
        name: s.name,
        namespace: s.namespace,
        labels: s.labels,
        annotations: s.annotations,
        ownerReferences: s.ownerReferences.map((r) => ({ ...r, blockOwnerDeletion: false })),
      },
      spec: {
        source: { persistentVolumeClaimName: s.pvcName },
        ...(s.className ? { volumeSnapshotClassName: s.className } : {}),
      },
    };
    const made = (await call(
      `creating VolumeSnapshot ${s.namespace}/${s.name}`,
      () => this.custom.createNamespacedCustomObject({ ...VOLUME_SNAPSHOT, namespace: s.namespace, body }),
      "create",
    )) as RawObject;
    return fromVolumeSnapshot(made);
  }

  async deleteVolumeSnapshot(namespace: string, name: string, uid: string): Promise<void> {
    await call(`deleting VolumeSnapshot ${namespace}/${name}`, () =>
      this.custom.deleteNamespacedCustomObject({
        ...VOLUME_SNAPSHOT,
        namespace,
        name,
        body: { preconditions: { uid } },
      }),
    );
  }

  async listVolumeSnapshotContents(): Promise<KubeVolumeSnapshotContent[]> {
    // resourceVersion "0": any recent state will do (the next pass sees what this one missed), so
    // the API server answers from its watch cache instead of a quorum read of etcd.
    const list = (await call("listing VolumeSnapshotContents", () =>
      this.custom.listClusterCustomObject({ ...VOLUME_SNAPSHOT_CONTENT, resourceVersion: "0" }),
    )) as { items?: RawObject[] };
    return (list.items ?? []).map(fromVolumeSnapshotContent);
  }

  async listNodes(): Promise<KubeNode[]> {
    const list = await call("listing Nodes", () => this.core.listNode());
    return list.items.map((n) => ({
      name: n.metadata?.name ?? "",
      annotations: { ...(n.metadata?.annotations ?? {}) },
      labels: { ...(n.metadata?.labels ?? {}) },
    }));
  }

  async patchNodeAnnotations(name: string, annotations: Record<string, string | null>): Promise<void> {
    await call(`annotating Node ${name}`, () =>
      this.core.patchNode(
        { name, body: { metadata: { annotations } } },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      ),
    );
  }

  async getLease(namespace: string, name: string): Promise<KubeLease | undefined> {
    try {
      return fromLease(await this.coordination.readNamespacedLease({ namespace, name }));
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) return undefined;
      throw mapError(err, `reading Lease ${namespace}/${name}`, "read");
    }
  }

  async createLease(lease: KubeLease): Promise<KubeLease> {
    return fromLease(
      await call(
        `creating Lease ${lease.namespace}/${lease.name}`,
        () => this.coordination.createNamespacedLease({ namespace: lease.namespace, body: toLease(lease) }),
        "create",
      ),
    );
  }

  async replaceLease(lease: KubeLease): Promise<KubeLease> {
    return fromLease(
      await call(
        `updating Lease ${lease.namespace}/${lease.name}`,
        () =>
          this.coordination.replaceNamespacedLease({
            namespace: lease.namespace,
            name: lease.name,
            body: toLease(lease),
          }),
        "update",
      ),
    );
  }

  async createEvent(e: KubeEvent): Promise<void> {
    // An Event about a cluster-scoped object (a VolumeSnapshotContent) lives in "default", where
    // kubectl describe looks for it (as client-go's recorder does).
    const namespace = e.involved.namespace === "" ? "default" : e.involved.namespace;
    await call(`recording Event ${e.reason}`, () =>
      this.core.createNamespacedEvent({
        namespace,
        body: {
          metadata: { generateName: `${e.involved.name}.`, namespace },
          involvedObject: { ...e.involved },
          type: e.type,
          reason: e.reason,
          message: e.message,
          source: { component: e.source },
          reportingComponent: e.source,
          reportingInstance: e.source,
          firstTimestamp: e.time,
          lastTimestamp: e.time,
          count: 1,
        },
      }),
    );
  }

  async createCsr(
    csr: Pick<KubeCsr, "name" | "signerName" | "requestPem" | "usages" | "expirationSeconds">,
  ): Promise<void> {
    await call(
      `creating CertificateSigningRequest ${csr.name}`,
      () =>
        this.certificates.createCertificateSigningRequest({
          body: {
            metadata: { name: csr.name },
            spec: {
              signerName: csr.signerName,
              request: Buffer.from(csr.requestPem).toString("base64"),
              usages: csr.usages,
              ...(csr.expirationSeconds !== undefined ? { expirationSeconds: csr.expirationSeconds } : {}),
            },
          },
        }),
      "create",
    );
  }

  async getCsr(name: string): Promise<KubeCsr | undefined> {
    try {
      return fromCsr(await this.certificates.readCertificateSigningRequest({ name }));
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) return undefined;
      throw mapError(err, `reading CertificateSigningRequest ${name}`, "read");
    }
  }

  async listCsrs(signerName: string): Promise<KubeCsr[]> {
    const list = await call("listing CertificateSigningRequests", () =>
      this.certificates.listCertificateSigningRequest({ fieldSelector: `spec.signerName=${signerName}` }),
    );
    return list.items.map(fromCsr);
  }

  async decideCsr(name: string, d: { approved: boolean; reason: string; message: string }): Promise<void> {
    const current = await call(`reading CertificateSigningRequest ${name}`, () =>
      this.certificates.readCertificateSigningRequest({ name }),
    );
    const conditions = [
      ...(current.status?.conditions ?? []),
      {
        type: d.approved ? "Approved" : "Denied",
        status: "True",
        reason: d.reason,
        message: d.message,
        lastUpdateTime: new Date(),
      },
    ];
    await call(
      `deciding CertificateSigningRequest ${name}`,
      () =>
        this.certificates.replaceCertificateSigningRequestApproval({
          name,
          body: { ...current, status: { ...current.status, conditions } },
        }),
      "update",
    );
  }

  async setCsrCertificate(name: string, certificatePem: string): Promise<void> {
    const current = await call(`reading CertificateSigningRequest ${name}`, () =>
      this.certificates.readCertificateSigningRequest({ name }),
    );
    await call(
      `issuing the certificate of CertificateSigningRequest ${name}`,
      () =>
        this.certificates.replaceCertificateSigningRequestStatus({
          name,
          body: {
            ...current,
            status: { ...current.status, certificate: Buffer.from(certificatePem).toString("base64") },
          },
        }),
      "update",
    );
  }

  async putConfigMap(namespace: string, name: string, data: Record<string, string>): Promise<void> {
    const body = { metadata: { name, namespace }, data };
    try {
      await this.core.replaceNamespacedConfigMap({ namespace, name, body });
    } catch (err) {
      if (!(err instanceof ApiException && err.code === 404)) {
        throw mapError(err, `updating ConfigMap ${namespace}/${name}`, "update");
      }
      await call(
        `creating ConfigMap ${namespace}/${name}`,
        () => this.core.createNamespacedConfigMap({ namespace, body }),
        "create",
      );
    }
  }
}

function defaultConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromDefault();
  return kc;
}

type Verb = "read" | "create" | "update";

async function call<T>(what: string, fn: () => Promise<T>, verb: Verb = "read"): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw mapError(err, what, verb);
  }
}

/** API errors as the one error type: the callers decide on codes, not on HTTP statuses. */
function mapError(err: unknown, what: string, verb: Verb): SnapblockError {
  if (err instanceof ApiException) {
    const status = err.code;
    if (status === 404) return new SnapblockError("NOT_FOUND", `${what}: not found`, { cause: err });
    if (status === 409) {
      return new SnapblockError(
        verb === "create" ? "ALREADY_EXISTS" : "BUSY",
        `${what}: conflict (changed by someone else)`,
        { cause: err },
      );
    }
    if (status === 401 || status === 403) {
      return new SnapblockError("INVALID_ARGUMENT", `${what}: forbidden (check the RBAC of snapblock)`, {
        cause: err,
      });
    }
    return new SnapblockError(status >= 500 ? "CLOSED" : "INTERNAL", `${what}: API status ${status}`, {
      cause: err,
    });
  }
  return new SnapblockError("CLOSED", `${what}: the Kubernetes API cannot be reached`, { cause: err });
}

function fromLease(l: V1Lease): KubeLease {
  const out: KubeLease = { name: l.metadata?.name ?? "", namespace: l.metadata?.namespace ?? "" };
  const s = l.spec ?? {};
  if (l.metadata?.resourceVersion) out.resourceVersion = l.metadata.resourceVersion;
  if (s.holderIdentity) out.holderIdentity = s.holderIdentity;
  if (s.leaseDurationSeconds !== undefined) out.leaseDurationSeconds = s.leaseDurationSeconds;
  if (s.acquireTime) out.acquireTime = new Date(s.acquireTime);
  if (s.renewTime) out.renewTime = new Date(s.renewTime);
  if (s.leaseTransitions !== undefined) out.leaseTransitions = s.leaseTransitions;
  return out;
}

function toLease(l: KubeLease): V1Lease {
  return {
    metadata: {
      name: l.name,
      namespace: l.namespace,
      ...(l.resourceVersion ? { resourceVersion: l.resourceVersion } : {}),
    },
    spec: {
      holderIdentity: l.holderIdentity ?? "",
      ...(l.leaseDurationSeconds !== undefined ? { leaseDurationSeconds: l.leaseDurationSeconds } : {}),
      ...(l.acquireTime ? { acquireTime: new V1MicroTime(l.acquireTime.getTime()) } : {}),
      ...(l.renewTime ? { renewTime: new V1MicroTime(l.renewTime.getTime()) } : {}),
      ...(l.leaseTransitions !== undefined ? { leaseTransitions: l.leaseTransitions } : {}),
    },
  };
}

/** A custom object as the API returns it (plain JSON). */
interface RawObject {
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    generation?: number;
    creationTimestamp?: string;
    deletionTimestamp?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: Array<{
      apiVersion: string;
      kind: string;
      name: string;
      uid: string;
      controller?: boolean;
    }>;
  };
  spec?: unknown;
  status?: unknown;
}

function fromVolumeSnapshot(o: RawObject): KubeVolumeSnapshot {
  const spec = (o.spec ?? {}) as {
    source?: { persistentVolumeClaimName?: string };
    volumeSnapshotClassName?: string;
  };
  const status = (o.status ?? {}) as { readyToUse?: boolean; error?: { message?: string } };
  const out: KubeVolumeSnapshot = {
    namespace: o.metadata?.namespace ?? "",
    name: o.metadata?.name ?? "",
    labels: { ...(o.metadata?.labels ?? {}) },
    annotations: { ...(o.metadata?.annotations ?? {}) },
    ownerReferences: (o.metadata?.ownerReferences ?? []).map((r) => ({
      apiVersion: r.apiVersion,
      kind: r.kind,
      name: r.name,
      uid: r.uid,
      ...(r.controller !== undefined ? { controller: r.controller } : {}),
    })),
    pvcName: spec.source?.persistentVolumeClaimName ?? "",
  };
  if (o.metadata?.uid) out.uid = o.metadata.uid;
  if (spec.volumeSnapshotClassName) out.className = spec.volumeSnapshotClassName;
  if (o.metadata?.creationTimestamp) out.creationTimestamp = new Date(o.metadata.creationTimestamp);
  if (status.readyToUse !== undefined) out.readyToUse = status.readyToUse;
  if (status.error?.message) out.error = status.error.message;
  return out;
}

function fromVolumeSnapshotContent(o: RawObject): KubeVolumeSnapshotContent {
  const spec = (o.spec ?? {}) as {
    driver?: string;
    deletionPolicy?: string;
    source?: { snapshotHandle?: string };
  };
  const out: KubeVolumeSnapshotContent = {
    name: o.metadata?.name ?? "",
    uid: o.metadata?.uid ?? "",
    driver: spec.driver ?? "",
    deletionPolicy: spec.deletionPolicy ?? "",
    deleting: o.metadata?.deletionTimestamp !== undefined,
  };
  if (spec.source?.snapshotHandle) out.snapshotHandle = spec.source.snapshotHandle;
  return out;
}

function fromCsr(c: V1CertificateSigningRequest): KubeCsr {
  const conditions = c.status?.conditions ?? [];
  const has = (type: string): boolean => conditions.some((x) => x.type === type && x.status === "True");
  const out: KubeCsr = {
    name: c.metadata?.name ?? "",
    signerName: c.spec.signerName,
    requestPem: Buffer.from(c.spec.request, "base64").toString("utf8"),
    usages: [...(c.spec.usages ?? [])],
    approved: has("Approved"),
    denied: has("Denied"),
    failed: has("Failed"),
  };
  const decision = conditions.find((x) => (x.type === "Denied" || x.type === "Approved") && x.message);
  if (decision?.message) out.message = decision.message;
  if (c.spec.expirationSeconds !== undefined) out.expirationSeconds = c.spec.expirationSeconds;
  if (c.spec.username) out.username = c.spec.username;
  if (c.spec.extra) out.extra = { ...c.spec.extra };
  if (c.status?.certificate)
    out.certificatePem = Buffer.from(c.status.certificate, "base64").toString("utf8");
  return out;
}
