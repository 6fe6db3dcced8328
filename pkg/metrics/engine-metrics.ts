import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import {
  isPointName,
  parseProtectionPolicy,
  type DataOp,
  type EngineObserver,
  type PoolStats,
} from "../engine/index.js";
import { IO_SECONDS_BUCKETS } from "./latency-buckets.js";
import { OVERFLOW_LABEL, SeriesLimit } from "./series-limit.js";
import { TallyCounter, TallyHistogram, type CounterSeries, type HistogramSeries } from "./tally.js";

/** Every DataOp, to remove a deleted volume's series (prom-client removes exact label sets only). */
const DATA_OPS: readonly DataOp[] = ["read", "write", "trim", "zero", "flush"];
const COPY_STATES = ["running", "done", "cancelled", "failed"] as const;
const REDIRECT_KINDS = ["full", "partial", "merged"] as const;

/** Default number of volumes (and of snapshots) with series of their own. */
export const DEFAULT_DEVICE_SERIES = 100;

export interface EngineMetricsOptions {
  registry: Registry;
  /** Value of the `pool` label. */
  pool: string;
  /** The pool's statistics, read at scrape time; undefined while the pool is not open. */
  stats: () => PoolStats | undefined;
  /**
   * Volumes (and, separately, snapshots) that get series of their own; later ones share the
   * `_other` series. 0 turns the per-volume and per-snapshot metrics off (pool totals remain).
   * Default DEFAULT_DEVICE_SERIES.
   */
  maxDeviceSeries?: number;
}

type PoolLabel = "pool";
/** The I/O series one request adds to (made once per op, and per volume and op: see ioCompleted). */
interface IoSeries {
  operations: CounterSeries;
  seconds: HistogramSeries;
  /** Bytes: every op pool-wide; per volume, reads and writes only. */
  bytes: CounterSeries | undefined;
}
type VolumeMetrics = ReturnType<typeof volumeMetrics>;

/**
 * The engine's metrics: counters and histograms fed by the pool's EngineObserver hooks, gauges
 * read from pool.stats() when Prometheus scrapes (never pushed, so they cannot go stale).
 */
export class EngineMetrics {
  readonly observer: EngineObserver;
  private readonly pool: string;
  private readonly volumes: SeriesLimit;
  private readonly snapshots: SeriesLimit;
  private readonly perDevice: VolumeMetrics | undefined;
  private readonly gauges: ReturnType<typeof poolGauges>;
  private readonly copyBytes: Counter<PoolLabel>;
  private copiedSoFar = 0;
  private cached: { stats: PoolStats | undefined } | undefined;
  /** The reading the gauges were last set from (null: none yet; undefined: the pool was closed). */
  private applied: PoolStats | undefined | null = null;
  private readonly io: ReturnType<typeof ioMetrics>;
  /** The pool-wide I/O series, by op, made at an op's first request. */
  private readonly poolIo = new Map<DataOp, IoSeries>();
  /** The per-volume I/O series by volume name and op, made again each scrape period (volumeIo). */
  private readonly volumeIoCache = new Map<string, Map<DataOp, IoSeries>>();

  constructor(private readonly options: EngineMetricsOptions) {
    const registers = [options.registry];
    const refresh = (): void => this.refresh();
    this.pool = options.pool;
    const max = options.maxDeviceSeries ?? DEFAULT_DEVICE_SERIES;
    this.volumes = new SeriesLimit(max);
    this.snapshots = new SeriesLimit(max);
    this.gauges = poolGauges(registers, refresh);
    this.perDevice = max > 0 ? volumeMetrics(registers, refresh) : undefined;
    this.copyBytes = new Counter({
      name: "snapblock_engine_copy_bytes_total",
      help: "Bytes copied by background full copies (restores and clones with full copy) since the pool opened.",
      labelNames: ["pool"],
      registers,
      collect: refresh,
    });
    const io = (this.io = ioMetrics(registers));
    const redirects = new Counter({
      name: "snapblock_engine_row_redirects_total",
      help: "Redirect-on-write: writes to chunks shared with a snapshot or clone that went to newly allocated chunks, in chunks, by kind: full chunks, partial chunks (only the written blocks), partial chunks merged whole.",
      labelNames: ["pool", "kind"],
      registers,
    });
    const allocations = new Counter({
      name: "snapblock_engine_chunk_allocations_total",
      help: "First writes into unallocated chunks (thin provisioning), in chunks, by kind: full chunks, partial chunks.",
      labelNames: ["pool", "kind"],
      registers,
    });
    const commits = new Histogram({
      name: "snapblock_engine_commit_duration_seconds",
      help: "Duration of metadata commits (data and metadata made durable).",
      labelNames: ["pool"],
      buckets: IO_SECONDS_BUCKETS,
      registers,
    });
    const commitRecords = new Counter({
      name: "snapblock_engine_commit_records_total",
      help: "Metadata records written by commits.",
      labelNames: ["pool"],
      registers,
    });
    // Series that exist from the start read 0 instead of being absent until the first event, so
    // rate() and increase() work from the first scrape.
    const pool = { pool: this.pool };
    for (const kind of REDIRECT_KINDS) redirects.inc({ ...pool, kind }, 0);
    commitRecords.inc(pool, 0);
    this.copyBytes.inc(pool, 0);

    // Content arriving from other nodes (cross-node restores, replicas).
    const pullBytes = new Counter({
      name: "snapblock_engine_pull_bytes_total",
      help: "Bytes of chunks fetched from other nodes (restores of another node's snapshot, replicas).",
      labelNames: ["pool"],
      registers,
    });
    const pullChunks = new Counter({
      name: "snapblock_engine_pull_chunks_total",
      help: "Chunks fetched from other nodes, by why: on_demand (a read or partial write waited for it) or background (the pull).",
      labelNames: ["pool", "mode"],
      registers,
    });
    const pullsFinished = new Counter({
      name: "snapblock_engine_pulls_finished_total",
      help: "Copies from another node that completed (every chunk of the source is here).",
      labelNames: ["pool"],
      registers,
    });
    // Recovery points (docs/protection.md).
    const pointsTaken = new Counter({
      name: "snapblock_engine_recovery_points_taken_total",
      help: "Recovery points taken by volumes' protection policies.",
      labelNames: ["pool"],
      registers,
    });
    const pointsDeleted = new Counter({
      name: "snapblock_engine_recovery_points_deleted_total",
      help: "Recovery points deleted, by why: thinning (the policy no longer keeps them) or space (points held more than their share of the pool's free space; the oldest went first).",
      labelNames: ["pool", "reason"],
      registers,
    });
    pointsTaken.inc({ pool: this.pool }, 0);
    pointsDeleted.inc({ pool: this.pool, reason: "thinning" }, 0);
    pointsDeleted.inc({ pool: this.pool, reason: "space" }, 0);
    this.observer = {
      pointTaken: () => pointsTaken.inc({ pool: this.pool }),
      pointsDeleted: (e) => {
        pointsDeleted.inc({ pool: this.pool, reason: e.reason }, e.count);
        this.perDevice?.pointsDeleted.inc(
          { pool: this.pool, volume: this.volumes.labelFor(e.volume), reason: e.reason },
          e.count,
        );
      },
      chunkFilled: (e) => {
        pullBytes.inc({ pool: this.pool }, e.bytes);
        pullChunks.inc({ pool: this.pool, mode: e.onDemand ? "on_demand" : "background" });
      },
      pullFinished: () => pullsFinished.inc({ pool: this.pool }),
      ioCompleted: (e) => {
        // Every request of every export comes through here: it adds to series it finds in a map
        // by op (and volume name), plain numbers the registry reads when scraped (tally.ts).
        const pool = this.poolIoSeries(e.op);
        pool.operations.value++;
        pool.seconds.observe(e.seconds);
        if (e.error !== undefined) {
          io.errors.series({ pool: this.pool, op: e.op }).value++;
          return;
        }
        pool.bytes!.value += e.bytes;
        // Per-volume series are for volumes; snapshot reads (exports of snapshots) count in the
        // pool totals only, which keeps the volume label meaning one thing.
        if (this.perDevice === undefined || e.kind !== "volume") return;
        const v = this.volumeIo(this.perDevice, e.device, e.op);
        v.operations.value++;
        v.seconds.observe(e.seconds);
        if (v.bytes !== undefined) v.bytes.value += e.bytes;
      },
      redirected: (e) => {
        if (e.shared.full > 0) redirects.inc({ pool: this.pool, kind: "full" }, e.shared.full);
        if (e.shared.partial > 0) redirects.inc({ pool: this.pool, kind: "partial" }, e.shared.partial);
        if (e.shared.merged > 0) redirects.inc({ pool: this.pool, kind: "merged" }, e.shared.merged);
        if (e.fresh.full > 0) allocations.inc({ pool: this.pool, kind: "full" }, e.fresh.full);
        if (e.fresh.partial > 0) allocations.inc({ pool: this.pool, kind: "partial" }, e.fresh.partial);
      },
      committed: (e) => {
        commits.observe({ pool: this.pool }, e.seconds);
        commitRecords.inc({ pool: this.pool }, e.records);
      },
    };
  }

  /**
   * One stats() reading per scrape: a scrape reads a dozen gauges that all come from one
   * PoolStats, and stats() walks the pool's tables. prom-client runs the collect callbacks of one
   * scrape in one turn of the event loop, so the reading is dropped at the next turn and the next
   * scrape sees the pool as it is then.
   */
  private current(): PoolStats | undefined {
    if (this.cached === undefined) {
      this.cached = { stats: this.options.stats() };
      setImmediate(() => {
        this.cached = undefined;
      });
    }
    return this.cached.stats;
  }

  /** Sets every gauge from one PoolStats (once per reading, however many gauges ask). */
  private refresh(): void {
    const stats = this.current();
    if (stats === this.applied) return;
    this.applied = stats;
    const g = this.gauges;
    for (const gauge of Object.values(g)) gauge.reset();
    this.perDevice?.resetGauges();
    if (stats === undefined) return;
    const pool = { pool: this.pool };
    g.size.set(pool, stats.sizeBytes);
    g.allocated.set(pool, stats.allocatedBytes);
    g.free.set(pool, stats.freeBytes);
    g.provisioned.set(pool, stats.provisionedBytes);
    g.metadata.set(pool, stats.metadataBytes);
    g.chunks.set({ ...pool, sharing: "shared" }, stats.sharedChunks);
    g.chunks.set({ ...pool, sharing: "exclusive" }, stats.exclusiveChunks);
    g.chunks.set({ ...pool, sharing: "partial" }, stats.partialChunks);
    g.volumes.set(pool, stats.volumes.length);
    g.snapshots.set(pool, stats.snapshots.length);
    // Volume by volume, what only its snapshots hold; plus the snapshots of volumes since deleted.
    const volumes = new Set(stats.volumes.map((v) => v.name));
    g.snapshotExclusive.set(
      pool,
      stats.volumes.reduce((sum, v) => sum + v.snapshotOnlyBytes, 0) +
        stats.snapshots
          .filter((s) => !volumes.has(s.sourceVolume))
          .reduce((sum, s) => sum + s.exclusiveBytes, 0),
    );
    g.reclaimable.set(pool, stats.reclaimableBytes);
    g.copyReserved.set(pool, stats.copyReservedBytes);
    for (const state of COPY_STATES) {
      g.copies.set({ ...pool, state }, stats.copies.filter((c) => c.state === state).length);
    }
    g.copyRemaining.set(
      pool,
      stats.copies
        .filter((c) => c.state === "running")
        .reduce((sum, c) => sum + (c.totalChunks - c.copiedChunks) * stats.chunkSize, 0),
    );
    const copied = stats.copies.reduce((sum, c) => sum + c.copiedChunks * stats.chunkSize, 0);
    // The copies list covers the pool's lifetime in this process, so it only grows; a counter
    // must never go down, hence the guard (a reopened pool starts its list again).
    if (copied > this.copiedSoFar) this.copyBytes.inc(pool, copied - this.copiedSoFar);
    this.copiedSoFar = copied;
    if (stats.lastCheck !== undefined) {
      g.checkOk.set(pool, stats.lastCheck.ok ? 1 : 0);
      g.checkProblems.set(pool, stats.lastCheck.problems);
      g.checkTime.set(pool, stats.lastCheck.at.getTime() / 1000);
    }
    if (this.perDevice !== undefined) this.applyDevices(stats, this.perDevice);
  }

  private poolIoSeries(op: DataOp): IoSeries {
    let series = this.poolIo.get(op);
    if (series === undefined) {
      const labels = { pool: this.pool, op };
      series = {
        operations: this.io.operations.series(labels),
        seconds: this.io.seconds.series(labels),
        bytes: this.io.bytes.series(labels),
      };
      this.poolIo.set(op, series);
    }
    return series;
  }

  /**
   * The per-volume I/O series of volume `name` and `op`, looked up once per scrape period:
   * applyDevices drops them all, since the volume label of a name changes when volumes go
   * (a name past the series limit may get a series of its own once one is free).
   */
  private volumeIo(d: VolumeMetrics, name: string, op: DataOp): IoSeries {
    let byOp = this.volumeIoCache.get(name);
    if (byOp === undefined) {
      byOp = new Map();
      this.volumeIoCache.set(name, byOp);
    }
    let series = byOp.get(op);
    if (series === undefined) {
      const volume = { pool: this.pool, volume: this.volumes.labelFor(name) };
      const bytes = op === "read" ? d.readBytes : op === "write" ? d.writtenBytes : undefined;
      series = {
        operations: d.operations.series({ ...volume, op }),
        seconds: d.seconds.series({ ...volume, op }),
        bytes: bytes?.series(volume),
      };
      byOp.set(op, series);
    }
    return series;
  }

  private applyDevices(stats: PoolStats, d: VolumeMetrics): void {
    this.volumeIoCache.clear();
    const gone = this.volumes.retain(new Set(stats.volumes.map((v) => v.name)));
    for (const volume of gone) d.forget({ pool: this.pool, volume });
    // Recovery points come and go every second: they get no series of their own (they would
    // churn the series and take every per-snapshot place), only a count per volume.
    const userSnapshots = stats.snapshots.filter((s) => !isPointName(s.name));
    const points = new Map<string, number>();
    for (const s of stats.snapshots)
      if (isPointName(s.name)) points.set(s.sourceVolume, (points.get(s.sourceVolume) ?? 0) + 1);
    this.snapshots.retain(new Set(userSnapshots.map((s) => s.name)));
    // Lag and interval of protected volumes: the `_other` series holds the largest lag and the
    // smallest interval of the volumes it stands for (a sum would mean nothing, and the alert
    // compares the two).
    const lag = new Map<string, { lag: number; interval: number }>();
    for (const v of stats.volumes) {
      const labels = { pool: this.pool, volume: this.volumes.labelFor(v.name) };
      // inc, not set: every volume past the limit adds into the one `_other` series.
      d.size.inc(labels, v.sizeBytes);
      d.allocated.inc(labels, v.totalBytes);
      d.exclusive.inc(labels, v.exclusiveBytes);
      d.snapshotOnly.inc(labels, v.snapshotOnlyBytes);
      d.snapshotCount.inc(labels, v.snapshotCount);
      d.pointCount.inc(labels, points.get(v.name) ?? 0);
      const tiers = v.protection ? parseProtectionPolicy(v.protection)?.tiers : undefined;
      if (tiers && v.protectionLagSeconds !== undefined) {
        const interval = tiers[0]!.intervalMs / 1000;
        const seen = lag.get(labels.volume);
        lag.set(labels.volume, {
          lag: Math.max(seen?.lag ?? 0, v.protectionLagSeconds),
          interval: Math.min(seen?.interval ?? Infinity, interval),
        });
        // The deletion counters exist from the volume's protection on, so increase() works at once.
        for (const reason of ["thinning", "space"]) d.pointsDeleted.inc({ ...labels, reason }, 0);
      }
    }
    for (const [volume, l] of lag) {
      d.protectionLag.set({ pool: this.pool, volume }, l.lag);
      d.protectionInterval.set({ pool: this.pool, volume }, l.interval);
    }
    for (const s of userSnapshots) {
      const snapshot = this.snapshots.labelFor(s.name);
      const labels = {
        pool: this.pool,
        snapshot,
        volume: snapshot === OVERFLOW_LABEL ? OVERFLOW_LABEL : s.sourceVolume,
      };
      d.snapshotSize.inc(labels, s.sizeBytes);
      d.snapshotExclusive.inc(labels, s.exclusiveBytes);
      d.snapshotShared.inc(labels, s.sharedBytes);
    }
  }
}

function poolGauges(registers: Registry[], collect: () => void) {
  const gauge = <L extends string>(name: string, help: string, labelNames: L[]) =>
    new Gauge<L>({ name, help, labelNames, registers, collect });
  return {
    size: gauge("snapblock_engine_pool_size_bytes", "Capacity of the pool's data area.", ["pool"]),
    allocated: gauge("snapblock_engine_pool_allocated_bytes", "Bytes of chunks in use.", ["pool"]),
    free: gauge("snapblock_engine_pool_free_bytes", "Bytes of free chunks.", ["pool"]),
    provisioned: gauge(
      "snapblock_engine_pool_provisioned_bytes",
      "Sum of the sizes of all volumes (thin provisioning: may exceed the pool size when overcommitted).",
      ["pool"],
    ),
    metadata: gauge(
      "snapblock_engine_metadata_bytes",
      "Pool metadata held in memory (chunk tables and reference counts).",
      ["pool"],
    ),
    chunks: gauge(
      "snapblock_engine_chunks",
      "Chunks in use by sharing: shared (mapped by more than one volume or snapshot), exclusive, partial (waiting for the background filler).",
      ["pool", "sharing"],
    ),
    volumes: gauge("snapblock_engine_volumes", "Volumes in the pool.", ["pool"]),
    snapshots: gauge("snapblock_engine_snapshots", "Snapshots in the pool.", ["pool"]),
    snapshotExclusive: gauge(
      "snapblock_engine_snapshot_exclusive_bytes",
      "Bytes only snapshots hold, volume by volume: what deleting every snapshot of every volume would give back.",
      ["pool"],
    ),
    reclaimable: gauge(
      "snapblock_engine_pool_reclaimable_bytes",
      "Bytes no volume or snapshot maps any more that the background filler is giving back.",
      ["pool"],
    ),
    copyReserved: gauge(
      "snapblock_engine_copy_reserved_bytes",
      "Free bytes held back for the running background full copies (new full copies are refused past it).",
      ["pool"],
    ),
    copies: gauge(
      "snapblock_engine_copies",
      "Background full copies since the pool opened, by state (running: in progress).",
      ["pool", "state"],
    ),
    copyRemaining: gauge(
      "snapblock_engine_copy_remaining_bytes",
      "Bytes the running background copies still have to copy.",
      ["pool"],
    ),
    checkOk: gauge(
      "snapblock_engine_check_ok",
      "1 if the last consistency check found no problem, 0 if it did (absent until a check ran).",
      ["pool"],
    ),
    checkProblems: gauge(
      "snapblock_engine_check_problems",
      "Problems found by the last consistency check (absent until a check ran).",
      ["pool"],
    ),
    checkTime: gauge(
      "snapblock_engine_check_timestamp_seconds",
      "Unix time of the last consistency check (absent until a check ran).",
      ["pool"],
    ),
  };
}

/** The pool-wide data-path series (tally.ts: every request adds to them). */
function ioMetrics(registers: Registry[]) {
  const labelNames = ["pool", "op"];
  return {
    operations: new TallyCounter({
      name: "snapblock_engine_io_operations_total",
      help: "Data operations on open volumes and snapshots, by operation (failed ones included).",
      labelNames,
      registers,
    }),
    errors: new TallyCounter({
      name: "snapblock_engine_io_errors_total",
      help: "Data operations that failed, by operation.",
      labelNames,
      registers,
    }),
    bytes: new TallyCounter({
      name: "snapblock_engine_io_bytes_total",
      help: "Bytes moved by successful data operations, by operation (trim and zero: bytes covered).",
      labelNames,
      registers,
    }),
    seconds: new TallyHistogram({
      name: "snapblock_engine_io_duration_seconds",
      help: "Latency of data operations, by operation.",
      labelNames,
      buckets: IO_SECONDS_BUCKETS,
      registers,
    }),
  };
}

function volumeMetrics(registers: Registry[], collect: () => void) {
  const volumeGauge = (name: string, help: string) =>
    new Gauge({ name, help, labelNames: ["pool", "volume"], registers, collect });
  const snapshotGauge = (name: string, help: string) =>
    new Gauge({ name, help, labelNames: ["pool", "snapshot", "volume"], registers, collect });
  const m = {
    readBytes: new TallyCounter({
      name: "snapblock_volume_read_bytes_total",
      help: "Bytes read from the volume.",
      labelNames: ["pool", "volume"],
      registers,
    }),
    writtenBytes: new TallyCounter({
      name: "snapblock_volume_written_bytes_total",
      help: "Bytes written to the volume.",
      labelNames: ["pool", "volume"],
      registers,
    }),
    operations: new TallyCounter({
      name: "snapblock_volume_operations_total",
      help: "Data operations on the volume, by operation (failed ones included).",
      labelNames: ["pool", "volume", "op"],
      registers,
    }),
    seconds: new TallyHistogram({
      name: "snapblock_volume_io_duration_seconds",
      help: "Latency of data operations on the volume, by operation.",
      labelNames: ["pool", "volume", "op"],
      buckets: IO_SECONDS_BUCKETS,
      registers,
    }),
    size: volumeGauge("snapblock_volume_size_bytes", "Provisioned size of the volume."),
    allocated: volumeGauge("snapblock_volume_allocated_bytes", "Bytes of chunks the volume maps."),
    exclusive: volumeGauge(
      "snapblock_volume_exclusive_bytes",
      "Bytes of chunks only this volume maps (the rest is shared with snapshots or clones).",
    ),
    snapshotSize: snapshotGauge(
      "snapblock_snapshot_size_bytes",
      "Size of the snapshot (its volume's size when taken).",
    ),
    snapshotExclusive: snapshotGauge(
      "snapblock_snapshot_exclusive_bytes",
      "Bytes of chunks only this snapshot maps: what deleting it would give back.",
    ),
    snapshotShared: snapshotGauge(
      "snapblock_snapshot_shared_bytes",
      "Bytes of chunks this snapshot maps that its volume, clones or other snapshots map too.",
    ),
    snapshotOnly: volumeGauge(
      "snapblock_volume_snapshot_only_bytes",
      "Bytes only this volume's snapshots hold (one or several of them): what deleting all of them would give back.",
    ),
    snapshotCount: volumeGauge(
      "snapblock_volume_snapshots",
      "Snapshots of this volume (its recovery points included).",
    ),
    pointCount: volumeGauge(
      "snapblock_volume_recovery_points",
      "Recovery points of this volume (docs/protection.md).",
    ),
    protectionLag: volumeGauge(
      "snapblock_volume_protection_lag_seconds",
      "Protected volumes only: seconds the volume's newest content has had no recovery point (0 while nothing was written since its newest point; else the newest point's age).",
    ),
    protectionInterval: volumeGauge(
      "snapblock_volume_protection_interval_seconds",
      "Protected volumes only: the finest interval of the volume's protection policy (how often it should get a point while written).",
    ),
    pointsDeleted: new Counter({
      name: "snapblock_volume_recovery_points_deleted_total",
      help: "Recovery points of the volume deleted, by why: thinning (its policy no longer keeps them) or space (points held more than their share of the pool's free space).",
      labelNames: ["pool", "volume", "reason"],
      registers,
    }),
  };
  return {
    ...m,
    resetGauges: () => {
      for (const g of [
        m.size,
        m.allocated,
        m.exclusive,
        m.snapshotSize,
        m.snapshotExclusive,
        m.snapshotShared,
        m.snapshotOnly,
        m.snapshotCount,
        m.pointCount,
        m.protectionLag,
        m.protectionInterval,
      ])
        g.reset();
    },
    /** Drops a deleted volume's counter series, so deleted volumes do not pile up. */
    forget: (labels: { pool: string; volume: string }) => {
      m.readBytes.remove(labels);
      m.writtenBytes.remove(labels);
      for (const reason of ["thinning", "space"]) m.pointsDeleted.remove({ ...labels, reason });
      for (const op of DATA_OPS) {
        m.operations.remove({ ...labels, op });
        m.seconds.remove({ ...labels, op });
      }
    },
  };
}
