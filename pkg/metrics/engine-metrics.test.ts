import { describe, expect, it } from "vitest";
import type { PoolStats } from "../engine/index.js";
import { EngineMetrics } from "./engine-metrics.js";
import { createMetricsRegistry } from "./metrics-registry.js";
import { OVERFLOW_LABEL } from "./series-limit.js";
import { sampleValue, samples } from "./test-samples.js";

const KiB = 1024;

function poolStats(volumes: string[], snapshots: Array<[string, string]> = []): PoolStats {
  return {
    chunkSize: 64 * KiB,
    sizeBytes: 1024 * KiB * 1024,
    allocatedBytes: 640 * KiB,
    freeBytes: 1024 * KiB * 1024 - 640 * KiB,
    provisionedBytes: volumes.length * 100 * KiB * 1024,
    reclaimableBytes: 64 * KiB,
    copyReservedBytes: 8 * 64 * KiB,
    volumes: volumes.map((name) => ({
      name,
      sizeBytes: 100 * KiB * 1024,
      totalBytes: 128 * KiB,
      exclusiveBytes: 64 * KiB,
      sharedBytes: 64 * KiB,
      snapshotOnlyBytes: snapshots.some(([, v]) => v === name) ? 192 * KiB : 0,
      snapshotCount: snapshots.filter(([, v]) => v === name).length,
      pointCount: 0,
    })),
    snapshots: snapshots.map(([name, sourceVolume]) => ({
      name,
      sourceVolume,
      sizeBytes: 100 * KiB * 1024,
      totalBytes: 64 * KiB,
      exclusiveBytes: 64 * KiB,
      sharedBytes: 0,
    })),
    metadataBytes: 4096,
    sharedChunks: 3,
    exclusiveChunks: 7,
    partialChunks: 1,
    copies: [
      { volume: "v1", state: "running", copiedChunks: 2, totalChunks: 10 },
      { volume: "v0", state: "done", copiedChunks: 4, totalChunks: 4 },
    ],
    lastCheck: { at: new Date(1_700_000_000_000), ok: true, problems: 0 },
  };
}

function setup(stats: () => PoolStats | undefined, maxDeviceSeries?: number) {
  const registry = createMetricsRegistry({ defaultMetrics: false });
  const metrics = new EngineMetrics({ registry, pool: "p", stats, maxDeviceSeries });
  return { registry, observer: metrics.observer };
}

describe("EngineMetrics", () => {
  it("reads the pool gauges from stats() at scrape time", async () => {
    let current = poolStats(["v1"], [["s1", "v1"]]);
    const { registry } = setup(() => current);
    expect(await sampleValue(registry, "snapblock_engine_pool_size_bytes", { pool: "p" })).toBe(1024 ** 3);
    expect(await sampleValue(registry, "snapblock_engine_pool_provisioned_bytes", { pool: "p" })).toBe(
      100 * 1024 ** 2,
    );
    expect(await sampleValue(registry, "snapblock_engine_chunks", { pool: "p", sharing: "shared" })).toBe(3);
    expect(await sampleValue(registry, "snapblock_engine_copies", { pool: "p", state: "running" })).toBe(1);
    expect(await sampleValue(registry, "snapblock_engine_copy_remaining_bytes", { pool: "p" })).toBe(
      8 * 64 * KiB,
    );
    expect(await sampleValue(registry, "snapblock_engine_copy_bytes_total", { pool: "p" })).toBe(
      6 * 64 * KiB,
    );
    expect(await sampleValue(registry, "snapblock_engine_snapshot_exclusive_bytes", { pool: "p" })).toBe(
      192 * KiB,
    );
    expect(await sampleValue(registry, "snapblock_engine_check_ok", { pool: "p" })).toBe(1);
    expect(await sampleValue(registry, "snapblock_engine_pool_reclaimable_bytes", { pool: "p" })).toBe(
      64 * KiB,
    );
    expect(await sampleValue(registry, "snapblock_engine_copy_reserved_bytes", { pool: "p" })).toBe(
      512 * KiB,
    );
    // Held by a volume's snapshots alone (not the sum of their exclusive bytes: chunks two of its
    // snapshots share count too).
    expect(
      await sampleValue(registry, "snapblock_volume_snapshot_only_bytes", { pool: "p", volume: "v1" }),
    ).toBe(192 * KiB);
    expect(await sampleValue(registry, "snapblock_volume_snapshots", { pool: "p", volume: "v1" })).toBe(1);
    expect(
      await sampleValue(registry, "snapblock_snapshot_shared_bytes", {
        pool: "p",
        snapshot: "s1",
        volume: "v1",
      }),
    ).toBe(0);
    expect(
      await sampleValue(registry, "snapblock_snapshot_exclusive_bytes", {
        pool: "p",
        snapshot: "s1",
        volume: "v1",
      }),
    ).toBe(64 * KiB);
    current = poolStats(["v1", "v2"]);
    // A later scrape (a later turn of the event loop) sees the new state.
    await new Promise((r) => setImmediate(r));
    expect(await sampleValue(registry, "snapblock_engine_volumes", { pool: "p" })).toBe(2);
    expect(await sampleValue(registry, "snapblock_engine_snapshots", { pool: "p" })).toBe(0);
    expect(await samples(registry, "snapblock_snapshot_size_bytes")).toEqual([]);
  });

  it("reads stats() once per scrape, however many gauges it feeds", async () => {
    let calls = 0;
    const { registry } = setup(() => {
      calls++;
      return poolStats(["v1"], [["s1", "v1"]]);
    });
    await registry.metrics();
    expect(calls).toBe(1);
    await new Promise((r) => setImmediate(r));
    await registry.metrics();
    expect(calls).toBe(2);
  });

  it("exposes no pool gauges while the pool is closed", async () => {
    const { registry } = setup(() => undefined);
    expect(await samples(registry, "snapblock_engine_pool_size_bytes")).toEqual([]);
  });

  it("counts I/O, redirects and commits from the observer hooks", async () => {
    const { registry, observer } = setup(() => poolStats(["v1"]));
    observer.ioCompleted?.({ device: "v1", kind: "volume", op: "write", bytes: 4096, seconds: 0.001 });
    observer.ioCompleted?.({ device: "v1", kind: "volume", op: "read", bytes: 8192, seconds: 0.0002 });
    observer.ioCompleted?.({ device: "s1", kind: "snapshot", op: "read", bytes: 512, seconds: 0.0002 });
    observer.ioCompleted?.({
      device: "v1",
      kind: "volume",
      op: "write",
      bytes: 0,
      seconds: 0.1,
      error: "NO_SPACE",
    });
    observer.redirected?.({
      device: "v1",
      shared: { full: 2, partial: 1, merged: 0 },
      fresh: { full: 3, partial: 0 },
    });
    observer.committed?.({ records: 5, seconds: 0.01 });
    const pool = { pool: "p" };
    expect(
      await sampleValue(registry, "snapblock_engine_io_operations_total", { ...pool, op: "write" }),
    ).toBe(2);
    expect(await sampleValue(registry, "snapblock_engine_io_errors_total", { ...pool, op: "write" })).toBe(1);
    expect(await sampleValue(registry, "snapblock_engine_io_bytes_total", { ...pool, op: "read" })).toBe(
      8704,
    );
    expect(await sampleValue(registry, "snapblock_volume_read_bytes_total", { ...pool, volume: "v1" })).toBe(
      8192,
    );
    expect(
      await sampleValue(registry, "snapblock_volume_written_bytes_total", { ...pool, volume: "v1" }),
    ).toBe(4096);
    expect(
      await sampleValue(registry, "snapblock_volume_io_duration_seconds_count", {
        ...pool,
        volume: "v1",
        op: "read",
      }),
    ).toBe(1);
    expect(
      await sampleValue(registry, "snapblock_engine_row_redirects_total", { ...pool, kind: "full" }),
    ).toBe(2);
    expect(
      await sampleValue(registry, "snapblock_engine_row_redirects_total", { ...pool, kind: "merged" }),
    ).toBe(0);
    expect(
      await sampleValue(registry, "snapblock_engine_chunk_allocations_total", { ...pool, kind: "full" }),
    ).toBe(3);
    expect(await sampleValue(registry, "snapblock_engine_commit_records_total", pool)).toBe(5);
    // Snapshot I/O counts in the pool totals only.
    expect(
      await sampleValue(registry, "snapblock_volume_read_bytes_total", { ...pool, volume: "s1" }),
    ).toBeUndefined();
  });

  it("bounds per-volume series and frees a deleted volume's slot", async () => {
    let current = poolStats(["a", "b", "c"]);
    const { registry, observer } = setup(() => current, 2);
    for (const device of ["a", "b", "c"]) {
      observer.ioCompleted?.({ device, kind: "volume", op: "write", bytes: 100, seconds: 0.001 });
    }
    const written = async (): Promise<Record<string, number>> => {
      const byVolume: Record<string, number> = {};
      for (const s of await samples(registry, "snapblock_volume_written_bytes_total")) {
        byVolume[s.labels.volume ?? ""] = s.value;
      }
      return byVolume;
    };
    expect(await written()).toEqual({ a: 100, b: 100, [OVERFLOW_LABEL]: 100 });
    expect(
      (await samples(registry, "snapblock_volume_allocated_bytes")).map((s) => [s.labels.volume, s.value]),
    ).toEqual([
      ["a", 128 * KiB],
      ["b", 128 * KiB],
      [OVERFLOW_LABEL, 128 * KiB],
    ]);
    current = poolStats(["b", "c"]);
    await new Promise((r) => setImmediate(r));
    await registry.metrics();
    expect(await written()).toEqual({ b: 100, [OVERFLOW_LABEL]: 100 });
    observer.ioCompleted?.({ device: "c", kind: "volume", op: "write", bytes: 1, seconds: 0.001 });
    expect(await written()).toEqual({ b: 100, c: 1, [OVERFLOW_LABEL]: 100 });
  });

  it("registers no per-volume or per-snapshot metric when they are turned off", async () => {
    const { registry, observer } = setup(() => poolStats(["v1"], [["s1", "v1"]]), 0);
    observer.ioCompleted?.({ device: "v1", kind: "volume", op: "write", bytes: 1, seconds: 0.001 });
    const names = (await registry.getMetricsAsJSON()).map((m) => m.name);
    expect(names.filter((n) => /^snapblock_(volume|snapshot)_/.test(n))).toEqual([]);
    expect(names).toContain("snapblock_engine_io_bytes_total");
  });

  it("names follow snapblock_<subsystem>_<name>_<unit> and counters end in _total", async () => {
    const { registry } = setup(() => poolStats(["v1"]));
    for (const m of await registry.getMetricsAsJSON()) {
      expect(m.name).toMatch(/^snapblock_(engine|volume|snapshot)_[a-z_]+$/);
      if (String(m.type) === "counter") expect(m.name).toMatch(/_total$/);
      if (String(m.type) === "histogram") expect(m.name).toMatch(/_seconds$/);
      expect(m.name).not.toMatch(/_total_|_(milliseconds|kilobytes|bytes_bytes)/);
    }
  });
});
