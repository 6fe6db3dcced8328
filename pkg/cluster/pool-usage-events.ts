import { formatByteSize } from "../byte-size/index.js";
import { POOL_USAGE_LEVELS, PVC_META, type EngineApi, type EngineCapacity } from "../engine-api/index.js";
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
 * --extra-create-metadata); volumes without it are counted in the log line only. The same look
 * finds recovery points a node deleted for space and tells the volume's PVC
 * (RecoveryPointsDropped, checkPointsDropped).
 */
export class PoolUsageEvents {
  private readonly levels = new Map<string, number>();
  /** Points dropped for space, by node and volume, as last seen (the engines' counts since open). */
  private readonly dropped = new Map<string, Map<string, number>>();
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
    await this.checkPointsDropped(engine, c);
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

  /**
   * Recovery points deleted for space (docs/protection.md, "Space"): each volume whose count grew
   * since the last look gets a Warning Event on its PVC with how many went and the share. An
   * engine that restarted counts from 0 again; a controller that started (or took over) reports
   * what the engines counted before it once.
   */
  private async checkPointsDropped(engine: EngineApi, c: EngineCapacity): Promise<void> {
    const seen = this.dropped.get(engine.nodeId) ?? new Map<string, number>();
    this.dropped.set(engine.nodeId, seen);
    const now = new Map((c.pointsDroppedForSpace ?? []).map((d) => [d.volume, d]));
    const grown = [...now.values()].flatMap((d) => {
      const before = seen.get(d.volume) ?? 0;
      const count = d.count >= before ? d.count - before : d.count; // fewer: the engine restarted
      return count > 0 ? [{ ...d, count }] : [];
    });
    seen.clear();
    for (const d of now.values()) seen.set(d.volume, d.count);
    if (grown.length === 0) return;
    const pvcs = await this.pvcsByVolume(engine);
    for (const d of grown) {
      const involved = pvcs.get(d.volume);
      const share = `${Math.round(d.shareOfFree * 100)}%`;
      this.o.logger.warn("recovery points were deleted for space", {
        node: engine.nodeId,
        volume: d.volume,
        deleted: d.count,
        heldBytes: d.heldBytes,
        budgetBytes: d.budgetBytes,
        shareOfFree: d.shareOfFree,
        pvc: involved ? `${involved.namespace}/${involved.name}` : undefined,
      });
      if (!involved) continue;
      this.o.events.record({
        involved,
        type: "Warning",
        reason: "RecoveryPointsDropped",
        message: `${d.count} recovery point(s) of this volume were deleted, oldest first: the recovery points in the snapblock pool on node ${engine.nodeId} held ${formatByteSize(d.heldBytes)}, more than their share (${share} of the pool's free space, ${formatByteSize(d.budgetBytes)}); free space on that node or use a coarser protection policy to keep more history`,
      });
    }
  }

  private async pvcsOn(engine: EngineApi): Promise<ObjectRef[]> {
    return [...(await this.pvcsByVolume(engine)).values()];
  }

  private async pvcsByVolume(engine: EngineApi): Promise<Map<string, ObjectRef>> {
    const { items } = await engine.listVolumes();
    return new Map(
      items.flatMap((v) => {
        const name = v.meta[PVC_META.name];
        const namespace = v.meta[PVC_META.namespace];
        return name && namespace
          ? [[v.name, { kind: "PersistentVolumeClaim", apiVersion: "v1", namespace, name }] as const]
          : [];
      }),
    );
  }
}
