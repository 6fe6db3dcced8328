import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { SeriesLimit } from "./series-limit.js";

/** Snapshots with series of their own (the rest only count in the totals). */
const DEFAULT_SNAPSHOT_SERIES = 100;

export interface ReplicationMetricsOptions {
  registry: Registry;
  maxSnapshotSeries?: number;
}

/**
 * The controller's view of snapshot replicas (pkg/cluster Replicator hooks): how many each
 * snapshot wants and has complete, how long snapshots take to reach their replica count, and
 * what the repair loop does. Per-snapshot series are capped; totals are always there.
 */
export class ReplicationMetrics {
  private readonly wanted: Gauge<"snapshot">;
  private readonly complete: Gauge<"snapshot">;
  private readonly snapshots: Gauge<"state">;
  private readonly shortfalls: Counter;
  private readonly repairs: Counter<"action">;
  private readonly lag: Histogram;
  private readonly limit: SeriesLimit;

  constructor(options: ReplicationMetricsOptions) {
    const registers = [options.registry];
    this.limit = new SeriesLimit(options.maxSnapshotSeries ?? DEFAULT_SNAPSHOT_SERIES);
    this.wanted = new Gauge({
      name: "snapblock_snapshot_replicas_wanted",
      help: "Replicas a snapshot asks for (VolumeSnapshotClass snapblock.dev/replicas), per snapshot id.",
      labelNames: ["snapshot"],
      registers,
    });
    this.complete = new Gauge({
      name: "snapblock_snapshot_replicas_complete",
      help: "Complete replicas of a snapshot on other nodes, per snapshot id.",
      labelNames: ["snapshot"],
      registers,
    });
    this.snapshots = new Gauge({
      name: "snapblock_replication_snapshots",
      help: "Snapshots that want replicas, by state: complete (all wanted replicas exist) or short.",
      labelNames: ["state"],
      registers,
    });
    this.shortfalls = new Counter({
      name: "snapblock_replication_shortfalls_total",
      help: "Times a snapshot could not get all its replicas (not enough reachable nodes with room).",
      registers,
    });
    this.repairs = new Counter({
      name: "snapblock_replication_repairs_total",
      help: "What the repair loop did: replicas added, extra copies dropped, deleted copies removed, stalled copies redirected.",
      labelNames: ["action"],
      registers,
    });
    this.lag = new Histogram({
      name: "snapblock_replication_seconds",
      help: "Time from a snapshot's creation until all its replicas are complete.",
      buckets: [1, 5, 15, 60, 300, 900, 3600, 14400],
      registers,
    });
  }

  /** The Replicator's observer. */
  readonly observer = {
    replicaCounts: (counts: { origin: string; wanted: number; complete: number }[]): void => {
      let short = 0;
      for (const gone of this.limit.retain(new Set(counts.map((c) => c.origin)))) {
        this.wanted.remove({ snapshot: gone });
        this.complete.remove({ snapshot: gone });
      }
      for (const c of counts) {
        if (c.complete < c.wanted) short++;
        const label = this.limit.labelFor(c.origin);
        if (label !== c.origin) continue; // past the series cap: totals only
        this.wanted.set({ snapshot: label }, c.wanted);
        this.complete.set({ snapshot: label }, c.complete);
      }
      this.snapshots.set({ state: "complete" }, counts.length - short);
      this.snapshots.set({ state: "short" }, short);
    },
    shortfall: (): void => this.shortfalls.inc(),
    repaired: (report: {
      added: string[];
      dropped: string[];
      deleted: string[];
      redirected: string[];
    }): void => {
      for (const action of ["added", "dropped", "deleted", "redirected"] as const) {
        if (report[action].length > 0) this.repairs.inc({ action }, report[action].length);
      }
    },
    replicated: (e: { origin: string; seconds: number }): void => this.lag.observe(e.seconds),
  };
}
