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
import { matchesSelector, selectorString } from "./label-selector.js";

/**
 * An API server of our own for tests: Nodes, Leases with resourceVersion checks, Events,
 * CertificateSigningRequests (stamped with the requester's identity), ConfigMaps, and for
 * SnapshotSchedules: schedules with a status subresource, PVCs, VolumeSnapshots with uids, name
 * uniqueness and uid preconditions on delete (selectors go through selectorString() first, so a
 * selector the real API would refuse fails here too); VolumeSnapshotContents, by name. Not part of the build (tsconfig.build.json
 * leaves out *.testing.ts).
 */
export class FakeKube implements KubeApi {
  nodes = new Map<string, KubeNode>();
  leases = new Map<string, KubeLease>();
  events: KubeEvent[] = [];
  failEvents = false;
  private version = 1;

  listNodes = () => Promise.resolve([...this.nodes.values()].map((n) => structuredClone(n)));
  patchNodeAnnotations(name: string, annotations: Record<string, string | null>): Promise<void> {
    const node = this.nodes.get(name);
    if (!node) return Promise.reject(new SnapblockError("NOT_FOUND", `node ${name}`));
    for (const [k, v] of Object.entries(annotations)) {
      if (v === null) delete node.annotations[k];
      else node.annotations[k] = v;
    }
    return Promise.resolve();
  }
  getLease = (ns: string, name: string) => Promise.resolve(structuredClone(this.leases.get(`${ns}/${name}`)));
  createLease(l: KubeLease): Promise<KubeLease> {
    const key = `${l.namespace}/${l.name}`;
    if (this.leases.has(key)) return Promise.reject(new SnapblockError("ALREADY_EXISTS", key));
    const stored = { ...l, resourceVersion: String(this.version++) };
    this.leases.set(key, stored);
    return Promise.resolve(structuredClone(stored));
  }
  replaceLease(l: KubeLease): Promise<KubeLease> {
    const key = `${l.namespace}/${l.name}`;
    if (this.leases.get(key)?.resourceVersion !== l.resourceVersion)
      return Promise.reject(new SnapblockError("BUSY", `conflict on ${key}`));
    const stored = { ...l, resourceVersion: String(this.version++) };
    this.leases.set(key, stored);
    return Promise.resolve(structuredClone(stored));
  }
  createEvent(e: KubeEvent): Promise<void> {
    if (this.failEvents) return Promise.reject(new SnapblockError("CLOSED", "api down"));
    this.events.push(e);
    return Promise.resolve();
  }

  // CertificateSigningRequests: the requester's identity is stamped by "the API server" from
  // whoever calls createCsr (see requester()).
  csrs = new Map<string, KubeCsr>();
  configMaps = new Map<string, Record<string, string>>();
  private stamp: Pick<KubeCsr, "username" | "extra"> = {};
  /** The same API seen by an authenticated requester (a node plugin's service account token). */
  requester(who: Pick<KubeCsr, "username" | "extra">): KubeApi {
    const view = Object.create(this) as FakeKube;
    view.stamp = who;
    return view;
  }
  createCsr(
    c: Pick<KubeCsr, "name" | "signerName" | "requestPem" | "usages" | "expirationSeconds">,
  ): Promise<void> {
    if (this.csrs.has(c.name)) return Promise.reject(new SnapblockError("ALREADY_EXISTS", c.name));
    this.csrs.set(c.name, { ...structuredClone(c), ...structuredClone(this.stamp) });
    return Promise.resolve();
  }
  getCsr = (name: string) => Promise.resolve(structuredClone(this.csrs.get(name)));
  listCsrs = (signer: string) =>
    Promise.resolve(
      [...this.csrs.values()].filter((c) => c.signerName === signer).map((c) => structuredClone(c)),
    );
  decideCsr(name: string, d: { approved: boolean; reason: string; message: string }): Promise<void> {
    const c = this.csrs.get(name);
    if (!c) return Promise.reject(new SnapblockError("NOT_FOUND", name));
    if (d.approved) c.approved = true;
    else c.denied = true;
    c.message = d.message;
    return Promise.resolve();
  }
  setCsrCertificate(name: string, pem: string): Promise<void> {
    const c = this.csrs.get(name);
    if (!c) return Promise.reject(new SnapblockError("NOT_FOUND", name));
    c.certificatePem = pem;
    return Promise.resolve();
  }
  putConfigMap(ns: string, name: string, data: Record<string, string>): Promise<void> {
    this.configMaps.set(`${ns}/${name}`, { ...data });
    return Promise.resolve();
  }

  // SnapshotSchedules, PVCs, VolumeSnapshots.
  schedules = new Map<string, KubeSnapshotSchedule>();
  pvcs = new Map<string, KubePvc>();
  snapshots = new Map<string, KubeVolumeSnapshot>();
  /** Calls by name, to check what the code under test asked for. */
  calls: string[] = [];
  /** Makes the next calls of a method fail (CLOSED: the API server cannot be reached). */
  failing = new Set<string>();
  /** The simulated clock, for creation timestamps. */
  now: () => Date = () => new Date();
  private enter(method: string): void {
    this.calls.push(method);
    if (this.failing.has(method))
      throw new SnapblockError("CLOSED", `${method}: the API server is unreachable`);
  }

  /** VolumeSnapshotContents by name (cluster-scoped). */
  contents = new Map<string, KubeVolumeSnapshotContent>();
  async listVolumeSnapshotContents(): Promise<KubeVolumeSnapshotContent[]> {
    this.enter("listVolumeSnapshotContents");
    return Promise.resolve([...this.contents.values()].map((c) => structuredClone(c)));
  }

  async listSnapshotSchedules(): Promise<KubeSnapshotSchedule[]> {
    this.enter("listSnapshotSchedules");
    return Promise.resolve([...this.schedules.values()].map((s) => structuredClone(s)));
  }
  async patchSnapshotScheduleStatus(
    namespace: string,
    name: string,
    status: SnapshotScheduleStatus,
  ): Promise<void> {
    this.enter("patchSnapshotScheduleStatus");
    const s = this.schedules.get(`${namespace}/${name}`);
    if (!s) throw new SnapblockError("NOT_FOUND", `SnapshotSchedule ${namespace}/${name}`);
    s.status = structuredClone(status);
    return Promise.resolve();
  }
  async listPvcs(namespace: string, selector: LabelSelector): Promise<KubePvc[]> {
    this.enter("listPvcs");
    selectorString(selector); // refuses what the API server would
    return Promise.resolve(
      [...this.pvcs.values()]
        .filter((p) => p.namespace === namespace && matchesSelector(p.labels, selector))
        .map((p) => structuredClone(p)),
    );
  }
  async listVolumeSnapshots(
    namespace: string,
    labels: Record<string, string>,
  ): Promise<KubeVolumeSnapshot[]> {
    this.enter("listVolumeSnapshots");
    return Promise.resolve(
      [...this.snapshots.values()]
        .filter((s) => s.namespace === namespace && matchesSelector(s.labels, { matchLabels: labels }))
        .map((s) => structuredClone(s)),
    );
  }
  async createVolumeSnapshot(s: KubeVolumeSnapshot): Promise<KubeVolumeSnapshot> {
    this.enter("createVolumeSnapshot");
    const key = `${s.namespace}/${s.name}`;
    if (this.snapshots.has(key)) throw new SnapblockError("ALREADY_EXISTS", `VolumeSnapshot ${key} exists`);
    const stored: KubeVolumeSnapshot = {
      ...structuredClone(s),
      uid: `uid-${this.version++}`,
      creationTimestamp: this.now(),
    };
    this.snapshots.set(key, stored);
    return Promise.resolve(structuredClone(stored));
  }
  async deleteVolumeSnapshot(namespace: string, name: string, uid: string): Promise<void> {
    this.enter("deleteVolumeSnapshot");
    const key = `${namespace}/${name}`;
    const s = this.snapshots.get(key);
    if (!s) throw new SnapblockError("NOT_FOUND", `VolumeSnapshot ${key}`);
    if (s.uid !== uid) throw new SnapblockError("BUSY", `VolumeSnapshot ${key}: precondition failed (uid)`);
    this.snapshots.delete(key);
    return Promise.resolve();
  }
}
