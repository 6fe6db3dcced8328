import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { PointScheduler, Pool } from "../engine/index.js";
import { EngineMetrics } from "./engine-metrics.js";
import { createMetricsRegistry } from "./metrics-registry.js";
import { sampleValue } from "./test-samples.js";

const CHUNK = 64 * 1024;
/** EngineMetrics reads the pool once per turn of the event loop: the next reading is after one. */
const nextReading = () => new Promise((resolve) => setImmediate(resolve));
let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

/** The engine's real observer and stats() against EngineMetrics: the hooks' contract, not a fake. */
describe("EngineMetrics on a real pool", () => {
  it("moves I/O, redirect-on-write, space and check series as the pool works", async () => {
    dir = mkdtempSync(path.join(tmpdir(), "sb-metrics-pool-"));
    const registry = createMetricsRegistry({ defaultMetrics: false });
    // The metrics exist before the pool (the pool takes their observer), as in cmd/.
    const opened: { pool?: Pool } = {};
    const metrics = new EngineMetrics({ registry, pool: "t", stats: () => opened.pool?.stats() });
    const pool = await Pool.create({
      dir,
      sizeBytes: 64 * CHUNK * 16,
      observer: metrics.observer,
      fillPartials: false,
    });
    opened.pool = pool;
    try {
      await pool.createVolume("vol", 16 * CHUNK);
      const device = pool.openVolume("vol");
      await device.write(0, Buffer.alloc(4 * CHUNK, 1));
      await device.flush();
      await pool.createSnapshot("vol", "snap");
      await device.write(0, Buffer.alloc(2 * CHUNK, 2));
      await device.read(0, CHUNK);
      device.close();
      // Recovery points: counted per volume, no per-snapshot series of their own.
      await pool.createVolume("pv", CHUNK);
      await pool.setProtection("pv", "1s for 1m");
      await pool.takePoint("pv", Date.now());
      await pool.check();

      const t = { pool: "t" };
      const v = { ...t, volume: "vol" };
      expect(await sampleValue(registry, "snapblock_volume_written_bytes_total", v)).toBe(6 * CHUNK);
      expect(await sampleValue(registry, "snapblock_volume_read_bytes_total", v)).toBe(CHUNK);
      expect(
        await sampleValue(registry, "snapblock_engine_row_redirects_total", { ...t, kind: "full" }),
      ).toBe(2); // redirected from chunks shared with the snapshot
      expect(
        await sampleValue(registry, "snapblock_engine_chunk_allocations_total", { ...t, kind: "full" }),
      ).toBe(4); // first writes to holes
      expect(await sampleValue(registry, "snapblock_volume_exclusive_bytes", v)).toBe(2 * CHUNK);
      expect(
        await sampleValue(registry, "snapblock_snapshot_exclusive_bytes", {
          ...t,
          snapshot: "snap",
          volume: "vol",
        }),
      ).toBe(2 * CHUNK);
      const pv = { ...t, volume: "pv" };
      expect(await sampleValue(registry, "snapblock_volume_recovery_points", pv)).toBe(1);
      expect(await sampleValue(registry, "snapblock_volume_recovery_points", v)).toBe(0);
      expect(await sampleValue(registry, "snapblock_volume_snapshots", pv)).toBe(1);
      const point = pool.listPoints("pv")[0]!.name;
      expect(
        await sampleValue(registry, "snapblock_snapshot_size_bytes", { ...t, snapshot: point, volume: "pv" }),
      ).toBeUndefined();
      expect(await sampleValue(registry, "snapblock_engine_chunks", { ...t, sharing: "shared" })).toBe(2);
      expect(await sampleValue(registry, "snapblock_engine_pool_allocated_bytes", t)).toBe(6 * CHUNK);
      expect(await sampleValue(registry, "snapblock_engine_check_ok", t)).toBe(1);
      expect(
        await sampleValue(registry, "snapblock_engine_commit_duration_seconds_count", t),
      ).toBeGreaterThan(0);
    } finally {
      await pool.close();
    }
  });

  it("shows a protected volume's protection lag, policy interval and deleted points", async () => {
    dir = mkdtempSync(path.join(tmpdir(), "sb-metrics-lag-"));
    const registry = createMetricsRegistry({ defaultMetrics: false });
    const opened: { pool?: Pool } = {};
    const metrics = new EngineMetrics({ registry, pool: "t", stats: () => opened.pool?.stats() });
    const pool = await Pool.create({ dir, sizeBytes: 64 * CHUNK, observer: metrics.observer });
    opened.pool = pool;
    try {
      await pool.createVolume("pv", 4 * CHUNK);
      await pool.createVolume("plain", 4 * CHUNK);
      await pool.setProtection("pv", "1s for 10s, 1h for 1d");
      const pv = { pool: "t", volume: "pv" };
      const lag = () => sampleValue(registry, "snapblock_volume_protection_lag_seconds", pv);
      // No point yet: counted from when protection began (just now).
      expect(await lag()).toBeLessThan(5);
      expect(await sampleValue(registry, "snapblock_volume_protection_interval_seconds", pv)).toBe(1);
      expect(
        await sampleValue(registry, "snapblock_volume_protection_lag_seconds", {
          pool: "t",
          volume: "plain",
        }),
      ).toBeUndefined();
      // Two points in the same hour an hour ago, written between: nothing written since the
      // newest, so no lag, however old it is.
      const hourAgo = Math.floor(Date.now() / 3_600_000) * 3_600_000 - 3_600_000;
      const h = pool.openVolume("pv");
      await pool.takePoint("pv", hourAgo + 1000);
      await h.write(0, Buffer.alloc(CHUNK, 1));
      await pool.takePoint("pv", hourAgo + 2000);
      await nextReading();
      expect(await lag()).toBe(0);
      // Written since: the lag is the newest point's age.
      await h.write(CHUNK, Buffer.alloc(CHUNK, 2));
      const age = (Date.now() - (hourAgo + 2000)) / 1000;
      await nextReading();
      expect(await lag()).toBeGreaterThanOrEqual(age - 1);
      expect(await lag()).toBeLessThan(age + 5);
      const deleted = (reason: string) =>
        sampleValue(registry, "snapblock_volume_recovery_points_deleted_total", { ...pv, reason });
      expect(await deleted("thinning")).toBe(0);
      // A tick takes a point (lag back to 0); the next thins the second of the two (not first in
      // its hour, and no longer the newest: a tick thins before it takes its point).
      const scheduler = new PointScheduler({ pool, tickMs: 0 });
      const report = await scheduler.tick();
      expect(report.taken).toHaveLength(1);
      expect(report.thinned).toBe(0);
      expect((await scheduler.tick()).thinned).toBe(1);
      await nextReading();
      expect(await lag()).toBe(0);
      expect(await deleted("thinning")).toBe(1);
      expect(await deleted("space")).toBe(0);
      h.close();
    } finally {
      await pool.close();
    }
  });
});
