import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isSnapblockError } from "../errors/index.js";
import {
  PointScheduler,
  Pool,
  parseProtectionPolicy,
  pointsToKeep,
  type PointsDeletedEvent,
} from "./index.js";

const CS = 4096;
const M = 60_000;
const H = 60 * M;
let dir: string;
let pool: Pool;
let deletions: PointsDeletedEvent[];

async function openPool(create: boolean, sizeBytes = 4096 * CS): Promise<Pool> {
  const options = {
    dir: join(dir, "pool"),
    autoCommitMs: 0,
    observer: { pointsDeleted: (e: PointsDeletedEvent) => deletions.push(e) },
  };
  return create ? Pool.create({ ...options, sizeBytes, chunkSize: CS }) : Pool.open(options);
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "snapblock-points-"));
  deletions = [];
  pool = await openPool(true);
});

afterEach(async () => {
  await pool.close().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

/** Writes one chunk of the volume with a byte that names the minute. */
async function writeChunk(volume: string, chunk: number, value: number): Promise<void> {
  const h = pool.openVolume(volume);
  try {
    await h.write(chunk * CS, Buffer.alloc(CS, value));
  } finally {
    h.close();
  }
}

function times(volume: string): number[] {
  return pool.listPoints(volume).map((p) => p.createdAt.getTime());
}

describe("recovery points", () => {
  it("are taken on the policy, thinned to exactly the policy's set, and survive a reopen", async () => {
    await pool.createVolume("vol", 64 * CS);
    await pool.setProtection("vol", "1m for 10m, 10m for 1h, 1h for 6h");
    const start = Date.UTC(2026, 10, 30, 0, 0, 0);
    let now = start;
    const scheduler = new PointScheduler({ pool, now: () => now, tickMs: 0 });
    let taken = 0;
    // 8 simulated hours, a write every minute (to one of 64 chunks), a tick every minute.
    for (let minute = 0; minute < 8 * 60; minute++) {
      now = start + minute * M;
      await writeChunk("vol", minute % 64, (minute % 250) + 1);
      const report = await scheduler.tick();
      taken += report.taken.length;
      expect(report.taken).toHaveLength(1);
    }
    expect(taken).toBe(480);
    const got = times("vol");
    // Independently, with the last tick at 07:59: one-minute points 07:50-07:59 (10); the
    // 10-minute boundaries younger than 1h not yet counted, 07:00-07:40 (5); the hour boundaries
    // younger than 6h not yet counted, 02:00-06:00 (5).
    const last = start + 479 * M;
    const expected = new Set<number>();
    for (let i = 0; i < 10; i++) expected.add(last - i * M);
    for (let t = last - (last % (10 * M)); last - t < H; t -= 10 * M) expected.add(t);
    for (let t = last - (last % H); last - t < 6 * H; t -= H) expected.add(t);
    expect(got).toEqual([...expected].sort((a, b) => a - b));
    expect(got).toHaveLength(10 + 5 + 5);
    // Thinning reported what it deleted.
    const thinned = deletions.filter((d) => d.reason === "thinning").reduce((n, d) => n + d.count, 0);
    expect(thinned).toBe(480 - got.length);
    expect((await pool.check()).problems).toEqual([]);

    // The policy and the points are in the durable metadata.
    await pool.close();
    pool = await openPool(false);
    expect(pool.getVolume("vol").protection).toBe("1m for 10m, 10m for 1h, 1h for 6h");
    expect(times("vol")).toEqual(got);
    expect((await pool.check()).ok).toBe(true);
  });

  it("skips points while nothing is written, and takes one after a write", async () => {
    await pool.createVolume("idle", 16 * CS);
    await pool.setProtection("idle", "1s for 1m, 1m for 1h");
    let now = Date.UTC(2026, 10, 30, 0, 0, 0);
    const scheduler = new PointScheduler({ pool, now: () => now, tickMs: 0 });
    await writeChunk("idle", 0, 7);
    expect((await scheduler.tick()).taken).toHaveLength(1);
    for (let i = 0; i < 120; i++) {
      now += 1000;
      const report = await scheduler.tick();
      expect(report.taken).toEqual([]);
      expect(report.skipped).toEqual(["idle"]);
    }
    // The one point stays (the newest is always kept) although older than the first window.
    expect(pool.listPoints("idle")).toHaveLength(1);
    // Zeroing a hole changes nothing either; a trim of written data does.
    const h = pool.openVolume("idle");
    await h.writeZeroes(5 * CS, CS);
    h.close();
    now += 1000;
    expect((await scheduler.tick()).taken).toEqual([]);
    const h2 = pool.openVolume("idle");
    await h2.trim(0, CS);
    h2.close();
    now += 1000;
    expect((await scheduler.tick()).taken).toHaveLength(1);
    // Two ticks in the same second take one point at most.
    await writeChunk("idle", 1, 9);
    expect((await scheduler.tick()).taken).toEqual([]);
  });

  it("keeps points within their share of free space, oldest first, and frees the space", async () => {
    await pool.close();
    await rm(join(dir, "pool"), { recursive: true });
    pool = await openPool(true, 256 * CS);
    await pool.createVolume("big", 256 * CS);
    await pool.setProtection("big", "1s for 1d");
    let now = Date.UTC(2026, 10, 30, 0, 0, 0);
    const scheduler = new PointScheduler({
      pool,
      now: () => now,
      tickMs: 0,
      maxShareOfFree: 0.25,
      spaceCheckMs: 0,
    });
    // Each second rewrites the same 16 chunks: each point keeps 16 chunks nobody else maps.
    let evicted = 0;
    for (let s = 0; s < 20; s++) {
      for (let c = 0; c < 16; c++) await writeChunk("big", c, s + 1);
      const report = await scheduler.tick();
      evicted += report.evicted;
      now += 1000;
      const held = [...pool.pointSpace().values()].reduce((a, b) => a + b, 0);
      const free = pool.usage().freeBytes;
      // After every tick the points hold at most a quarter of (free + held), or only the newest
      // point is left.
      if (pool.listPoints("big").length > 1) expect(held).toBeLessThanOrEqual(0.25 * (free + held));
    }
    expect(evicted).toBeGreaterThan(0);
    const space = deletions.filter((d) => d.reason === "space");
    expect(space.length).toBeGreaterThan(0);
    expect(space[0]!.heldBytes).toBeGreaterThan(space[0]!.budgetBytes!);
    // The oldest went: what is left are the newest points, in one run of seconds.
    const left = times("big");
    expect(left[left.length - 1]).toBe(now - 1000);
    left.forEach((t, i) => expect(t).toBe(left[0]! + i * 1000));
    expect((await pool.check()).problems).toEqual([]);
    // Deleting the points gave their chunks back.
    const before = pool.usage().freeBytes;
    await pool.setProtection("big", "off");
    await pool.deletePoints(pool.listPoints("big").map((p) => p.name));
    expect(pool.usage().freeBytes).toBeGreaterThan(before);
    expect((await pool.check()).ok).toBe(true);
  });

  it("accounts again before the period when free space falls fast, so points cannot fill the pool", async () => {
    await pool.close();
    await rm(join(dir, "pool"), { recursive: true });
    pool = await openPool(true, 512 * CS);
    await pool.createVolume("hot", 64 * CS);
    await pool.setProtection("hot", "1s for 1d");
    let now = Date.UTC(2026, 10, 30, 0, 0, 0);
    // An accounting period far longer than the run: only a fast fall of free space brings one.
    const scheduler = new PointScheduler({
      pool,
      now: () => now,
      tickMs: 0,
      maxShareOfFree: 0.25,
      spaceCheckMs: H,
    });
    // Each second rewrites the whole volume: every point holds 64 chunks only it maps, so
    // without further accountings the points would take the pool within eight seconds.
    let evicted = 0;
    for (let s = 0; s < 30; s++) {
      for (let c = 0; c < 64; c++) await writeChunk("hot", c, s + 1);
      evicted += (await scheduler.tick()).evicted;
      now += 1000;
      const held = [...pool.pointSpace().values()].reduce((a, b) => a + b, 0);
      const free = pool.usage().freeBytes;
      // Within the share, plus what may fall before the next accounting (half the budget) and
      // one second of writes.
      expect(held, `second ${s}`).toBeLessThanOrEqual(0.25 * (free + held) * 1.5 + 64 * CS);
    }
    expect(evicted).toBeGreaterThan(1);
    expect(pool.usage().freeBytes).toBeGreaterThan(128 * CS);
    expect((await pool.check()).problems).toEqual([]);
  });

  it("restores the point at or before a time with the content written then", async () => {
    await pool.createVolume("log", 8 * CS);
    await pool.setProtection("log", "1s for 1h");
    const start = Date.UTC(2026, 10, 30, 15, 0, 0);
    let now = start;
    const scheduler = new PointScheduler({ pool, now: () => now, tickMs: 0 });
    const written: { at: number; value: number }[] = [];
    for (let s = 0; s < 30; s++) {
      now = start + s * 1000;
      // The writer logs what it wrote and when; some seconds write nothing.
      if (s % 3 !== 2) {
        await writeChunk("log", 0, s + 1);
        written.push({ at: now, value: s + 1 });
      }
      await scheduler.tick();
    }
    for (const at of [start + 4500, start + 5000, start + 29_000, start + 17_999]) {
      const point = pool.pointAt("log", at);
      const expected = written.filter((w) => w.at <= at).pop()!.value;
      const name = `r-${at}`;
      await pool.restoreSnapshot(point.name, name);
      const h = pool.openVolume(name);
      const data = await h.read(0, CS);
      h.close();
      expect(data.every((b) => b === expected)).toBe(true);
    }
    expect(() => pool.pointAt("log", start - 1)).toThrow(/no recovery point at or before/);
  });

  it("reserves point names, ignores points in snapshot limits, and deletes points with their volume", async () => {
    await pool.createVolume("v", 4 * CS);
    const err = await pool.createSnapshot("v", "rp--1-5").catch((e: unknown) => e);
    expect(isSnapblockError(err, "INVALID_ARGUMENT")).toBe(true);
    await pool.setProtection("v", "1s for 1m");
    await writeChunk("v", 0, 1);
    await pool.takePoint("v", 1000);
    await writeChunk("v", 0, 2);
    await pool.takePoint("v", 2000);
    await pool.createSnapshot("v", "mine", { limits: { maxSnapshots: 1 } });
    expect(pool.listSnapshots("v").filter((s) => s.point)).toHaveLength(2);
    await pool.deleteVolume("v");
    expect(pool.listSnapshots().map((s) => s.name)).toEqual(["mine"]);
    expect((await pool.check()).ok).toBe(true);
  });

  it("refuses a bad policy with INVALID_ARGUMENT and leaves the old one", async () => {
    await pool.createVolume("v", 4 * CS);
    await pool.setProtection("v", "1s for 1m");
    const err = await pool.setProtection("v", "1m for 1s").catch((e: unknown) => e);
    expect(isSnapblockError(err, "INVALID_ARGUMENT")).toBe(true);
    expect(pool.getVolume("v").protection).toBe("1s for 1m");
    expect(pointsToKeep(parseProtectionPolicy("1s for 1m")!.tiers, [], 0).size).toBe(0);
  });
});
