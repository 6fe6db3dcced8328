import type { KubeApi } from "./kube-api.js";
import { readAnnouncement, type NodeAnnouncement } from "./node-announcement.js";
import type { NodeDiscovery, NodeEndpoint } from "../cluster/index.js";

export interface KubernetesNodeDiscoveryOptions {
  api: KubeApi;
  /**
   * An announcement older than this is left out (its plugin is gone or stuck): new volumes are
   * not placed there. Its existing volumes still route to it by id and answer UNAVAILABLE.
   * Default 5 minutes (five missed refreshes of the default announcer).
   */
  staleAfterMs?: number;
  now?: () => Date;
}

/** Node discovery from the annotations node plugins publish on their Node objects. */
export class KubernetesNodeDiscovery implements NodeDiscovery {
  private last: NodeAnnouncement[] = [];

  constructor(private readonly o: KubernetesNodeDiscoveryOptions) {}

  async nodes(): Promise<NodeEndpoint[]> {
    const now = (this.o.now?.() ?? new Date()).getTime();
    const staleAfter = this.o.staleAfterMs ?? 5 * 60_000;
    const announced = (await this.o.api.listNodes()).flatMap((n) => readAnnouncement(n) ?? []);
    this.last = announced.filter((a) => !a.heartbeat || now - a.heartbeat.getTime() <= staleAfter);
    return this.last.map(({ nodeId, address }) => ({ nodeId, address }));
  }

  /** The announcements of the last listing (capacity figures, for logs and metrics). */
  announcements(): NodeAnnouncement[] {
    return this.last.map((a) => ({ ...a }));
  }
}
