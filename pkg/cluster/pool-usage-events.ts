import { POOL_USAGE_LEVELS, PVC_META, type EngineApi } from "../engine-api/index.js";
import type { Logger } from "../log/index.js";
import type { EventRecorder, ObjectRef } from "./event-recorder.js";

export interface PoolUsageEventsOptions {
  /** The controller's engine: every node's pool is looked at (nodeEngines()). */
  engine: EngineApi;
  events: EventRecorder;
  logger: Logger;
  /** How often the pools are looked at (default 30 s). */
  intervalMs?: number;
  /** At most this many PVCs get an Event per crossing; the rest are counted in the log (default 100). */
  maxPvcs?: number;
}

/** A level is left downwards only this many percent below it, as the engine does. */
const HYSTERESIS = 2;

/**
 * A pool filling up is loud in cluster mode too: when a node's pool crosses 80, 90 or 100 % use,
 * every PVC with a volume in that pool gets a Warning Event (PoolFilling, PoolFull), so `kubectl
 * describe pvc` and the namespace's events tell the people whose writes are about to fail, not
 * only the operator reading the node's log. Going back below 80 % gives a Normal PoolSpaceFreed.
 * PVCs are known from what the controller kept with each volume at creation (the provisioner's
 * --extra-create-metadata); volumes without it are counted in the log line only.
 */
export class PoolUsageEvents {
  private readonly levels = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(private readonly o: PoolUsageEventsOptions) {}

  start(): void {
    this.timer = setInterval(() => void this.check(), this.o.intervalMs ?? 30_000);
    this.timer.unref();
    void this.check();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One look at every node's pool (overlapping calls share the round in flight). */
  check(): Promise<void> {
    this.running ??= this.round().finally(() => (this.running = undefined));
    return this.running;
  }

  private async round(): Promise<void> {
    await Promise.all(
      this.o.engine.nodeEngines().map(async (engine) => {
        try {
          await this.checkNode(engine);
        } catch (err) {
          // A node that cannot answer keeps its last level; its own log says more.
          this.o.logger.debug("pool usage of a node could not be read", { node: engine.nodeId, err });
        }
      }),
    );
  }

  private async checkNode(engine: EngineApi): Promise<void> {
    const c = await engine.capacity();
    if (c.totalBytes <= 0) return;
    const percent = ((c.totalBytes - c.freeBytes) / c.totalBytes) * 100;
    let level = 0;
    for (const l of POOL_USAGE_LEVELS) if (percent >= l) level = l;
    const previous = this.levels.get(engine.nodeId) ?? 0;
    if (level === previous || (level < previous && percent > previous - HYSTERESIS)) return;
    this.levels.set(engine.nodeId, level);
    if (level > 0 && level < previous) return; // easing between warning levels: no news
    const pvcs = await this.pvcsOn(engine);
    const used = `${Math.floor(percent)}% (${c.totalBytes - c.freeBytes} of ${c.totalBytes} bytes)`;
    const event =
      level === 0
        ? {
            type: "Normal" as const,
            reason: "PoolSpaceFreed",
            message: `the snapblock pool on node ${engine.nodeId} is back to ${used} used`,
          }
        : {
            type: "Warning" as const,
            reason: level >= 100 ? "PoolFull" : "PoolFilling",
            message:
              level >= 100
                ? `the snapblock pool on node ${engine.nodeId} holding this volume is full (${used}): writes that need new space fail; delete snapshots or volumes on that node`
                : `the snapblock pool on node ${engine.nodeId} holding this volume is over ${level}% used (${used}); delete snapshots or volumes on that node before writes fail`,
          };
    const max = this.o.maxPvcs ?? 100;
    for (const involved of pvcs.slice(0, max)) this.o.events.record({ involved, ...event });
    this.o.logger[level === 0 ? "info" : "warn"]("pool usage crossed a level", {
      node: engine.nodeId,
      usageLevel: level,
      previousLevel: previous,
      percent: Math.floor(percent),
      pvcEvents: Math.min(pvcs.length, max),
      pvcsNotTold: Math.max(0, pvcs.length - max),
    });
  }

  private async pvcsOn(engine: EngineApi): Promise<ObjectRef[]> {
    const { items } = await engine.listVolumes();
    return items.flatMap((v) => {
      const name = v.meta[PVC_META.name];
      const namespace = v.meta[PVC_META.namespace];
      return name && namespace ? [{ kind: "PersistentVolumeClaim", apiVersion: "v1", namespace, name }] : [];
    });
  }
}
