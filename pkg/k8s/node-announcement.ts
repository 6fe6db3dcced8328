import type { KubeApi, KubeNode } from "./kube-api.js";
import type { Logger } from "../log/index.js";
import type { EngineCapacity } from "../engine-api/index.js";
import type { NodeEndpoint } from "../cluster/index.js";

/**
 * What a node plugin publishes on its own Node object, under snapblock.dev/ annotations
 * (annotations, not labels: values like "10.0.0.1:7443" are not valid label values):
 * its engine endpoint, its pool's capacity and what it can still provision, and when it last
 * said so. The controller's Kubernetes discovery reads them back.
 */
export const ANNOTATION = {
  endpoint: "snapblock.dev/engine-endpoint",
  capacityBytes: "snapblock.dev/pool-capacity-bytes",
  availableBytes: "snapblock.dev/pool-available-bytes",
  heartbeat: "snapblock.dev/heartbeat",
} as const;

export interface NodeAnnouncement extends NodeEndpoint {
  capacityBytes?: number;
  availableBytes?: number;
  heartbeat?: Date;
}

/** The announcement a Node carries, or undefined when it has no snapblock node plugin. */
export function readAnnouncement(node: KubeNode): NodeAnnouncement | undefined {
  const address = node.annotations[ANNOTATION.endpoint];
  if (!address) return undefined;
  const out: NodeAnnouncement = { nodeId: node.name, address };
  const num = (key: string) => {
    const v = Number(node.annotations[key]);
    return node.annotations[key] !== undefined && Number.isSafeInteger(v) && v >= 0 ? v : undefined;
  };
  const capacity = num(ANNOTATION.capacityBytes);
  const available = num(ANNOTATION.availableBytes);
  if (capacity !== undefined) out.capacityBytes = capacity;
  if (available !== undefined) out.availableBytes = available;
  const beat = new Date(node.annotations[ANNOTATION.heartbeat] ?? "");
  if (!Number.isNaN(beat.getTime())) out.heartbeat = beat;
  return out;
}

export interface NodeAnnouncerOptions {
  api: KubeApi;
  /** The Node object's name (the node id). */
  nodeId: string;
  /** The address the controller dials (the pod IP and engine port, or a DNS name). */
  endpoint: string;
  capacity: () => Promise<EngineCapacity>;
  /** How often to refresh (default 60 s). */
  intervalMs?: number;
  logger: Logger;
  now?: () => Date;
}

/**
 * Publishes and refreshes the node's announcement. A restarted node plugin announces again at
 * once, so a changed endpoint (new pod IP) reaches the controller within its refresh period.
 */
export class NodeAnnouncer {
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly o: NodeAnnouncerOptions) {}

  async announce(): Promise<void> {
    const cap = await this.o.capacity();
    await this.o.api.patchNodeAnnotations(this.o.nodeId, {
      [ANNOTATION.endpoint]: this.o.endpoint,
      [ANNOTATION.capacityBytes]: String(cap.totalBytes),
      [ANNOTATION.availableBytes]: String(cap.availableBytes),
      [ANNOTATION.heartbeat]: (this.o.now?.() ?? new Date()).toISOString(),
    });
  }

  /** Announces now and then every intervalMs; failures are logged and retried next time. */
  start(): Promise<void> {
    const tick = async () => {
      try {
        await this.announce();
      } catch (err) {
        this.o.logger.warn("announcing the node on its Node object failed; retrying later", { err });
      }
    };
    this.timer = setInterval(() => void tick(), this.o.intervalMs ?? 60_000);
    this.timer.unref();
    return tick();
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
