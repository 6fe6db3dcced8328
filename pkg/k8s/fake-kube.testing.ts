import { SnapblockError } from "../errors/index.js";
import type { KubeApi, KubeCsr, KubeEvent, KubeLease, KubeNode } from "./kube-api.js";

/**
 * An API server of our own for tests: Nodes, Leases with resourceVersion checks, Events,
 * CertificateSigningRequests (stamped with the requester's identity), ConfigMaps. Not part of the
 * build (tsconfig.build.json leaves out *.testing.ts).
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
}
