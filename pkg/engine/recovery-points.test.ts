import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { isSnapblockError } from "../errors/index.js";
import {
  NodeStorage,
  PointScheduler,
  Pool,
  type Storage,
  type StorageFile,
  nextTickDelay,
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
let commits: number;

async function openPool(create: boolean, sizeBytes = 4096 * CS): Promise<Pool> {
  const options = {
    dir: join(dir, "pool"),
    autoCommitMs: 0,
    observer: {
      pointsDeleted: (e: PointsDeletedEvent) => deletions.push(e),
      committed: () => commits++,
    },
  };
  return create ? Pool.create({ ...options, sizeBytes, chunkSize: CS }) : Pool.open(options);
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "snapblock-points-"));
  deletions = [];
  commits = 0;
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

/**
 * Replaces the pool with one of `poolChunks` chunks holding one volume protected "1s for 1d", and
 * returns a scheduler on a simulated clock (points may hold a quarter of the free space).
 */
async function smallProtectedPool(o: {
  poolChunks: number;
  volume: string;
  volumeChunks: number;
  spaceCheckMs: number;
}): Promise<{ clock: { now: number }; scheduler: PointScheduler }> {
  await pool.close();
  await rm(join(dir, "pool"), { recursive: true });
  pool = await openPool(true, o.poolChunks * CS);
  await pool.createVolume(o.volume, o.volumeChunks * CS);
  await pool.setProtection(o.volume, "1s for 1d");
  const clock = { now: Date.UTC(2026, 10, 30, 0, 0, 0) };
  const scheduler = new PointScheduler({
    pool,
    now: () => clock.now,
    tickMs: 0,
    maxShareOfFree: 0.25,
    spaceCheckMs: o.spaceCheckMs,
  });
  return { clock, scheduler };
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
    const { clock, scheduler } = await smallProtectedPool({
      poolChunks: 256,
      volume: "big",
      volumeChunks: 256,
      spaceCheckMs: 0,
    });
    // Each second rewrites the same 16 chunks: each point keeps 16 chunks nobody else maps.
    let evicted = 0;
    for (let s = 0; s < 20; s++) {
      for (let c = 0; c < 16; c++) await writeChunk("big", c, s + 1);
      const report = await scheduler.tick();
      evicted += report.evicted;
      clock.now += 1000;
      const held = [...(await pool.pointSpace()).byVolume.values()].reduce((a, b) => a + b, 0);
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
    expect(left[left.length - 1]).toBe(clock.now - 1000);
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
    // An accounting period far longer than the run: only a fast fall of free space brings one.
    const { clock, scheduler } = await smallProtectedPool({
      poolChunks: 512,
      volume: "hot",
      volumeChunks: 64,
      spaceCheckMs: H,
    });
    // Each second rewrites the whole volume: every point holds 64 chunks only it maps, so
    // without further accountings the points would take the pool within eight seconds.
    let evicted = 0;
    for (let s = 0; s < 30; s++) {
      for (let c = 0; c < 64; c++) await writeChunk("hot", c, s + 1);
      evicted += (await scheduler.tick()).evicted;
      clock.now += 1000;
      const held = [...(await pool.pointSpace()).byVolume.values()].reduce((a, b) => a + b, 0);
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

  it("makes one commit a tick for all volumes, thinning included, and the thinning is durable", async () => {
    const names = ["a", "b", "c"];
    for (const v of names) {
      await pool.createVolume(v, 16 * CS);
      await pool.setProtection(v, "1s for 3s");
    }
    const start = Date.UTC(2026, 10, 30, 0, 0, 0);
    let now = start;
    const scheduler = new PointScheduler({ pool, now: () => now, tickMs: 0 });
    for (let second = 0; second < 10; second++) {
      now = start + second * 1000;
      for (const v of names) await writeChunk(v, second % 16, second + 1);
      const before = commits;
      const report = await scheduler.tick();
      expect(report.taken).toHaveLength(3);
      // From the fourth tick on, each also thins a point of each volume (three seconds old).
      expect(report.thinned).toBe(second >= 3 ? 3 : 0);
      expect(commits - before).toBe(1);
    }
    // Idle volumes: thinning alone still commits, once.
    now += 5000;
    const before = commits;
    const report = await scheduler.tick();
    expect(report.taken).toEqual([]);
    expect(report.thinned).toBe(3 * 2);
    expect(commits - before).toBe(1);
    const kept = names.map((v) => times(v));
    for (const t of kept) expect(t).toEqual([start + 9000]);
    // What the tick reported deleted stays deleted after a reopen (the commit carried it).
    await pool.close();
    pool = await openPool(false);
    expect(names.map((v) => times(v))).toEqual(kept);
    expect((await pool.check()).problems).toEqual([]);
  });

  it("records the next point while the last one's commit is still running, and reports both once durable", async () => {
    // The data file's sync waits while `held`: a commit that takes as long as the test wants.
    let held = false;
    const waiting: (() => void)[] = [];
    const inner = await NodeStorage.create(join(dir, "slow"));
    const storage: Storage = {
      location: inner.location,
      exists: (n) => inner.exists(n),
      rename: (a, b) => inner.rename(a, b),
      remove: (n) => inner.remove(n),
      syncDir: () => inner.syncDir(),
      open: async (name, o) => {
        const f = await inner.open(name, o);
        if (!o.bulk) return f;
        const slow = Object.assign(Object.create(Object.getPrototypeOf(f) as object) as StorageFile, f);
        slow.sync = async () => {
          if (held) await new Promise<void>((resolve) => waiting.push(resolve));
          return f.sync();
        };
        return slow;
      },
    };
    await pool.close();
    let reported = 0;
    pool = await Pool.create({
      storage,
      sizeBytes: 1024 * CS,
      chunkSize: CS,
      autoCommitMs: 0,
      observer: { pointTaken: () => reported++ },
    });
    await pool.createVolume("v", 16 * CS);
    await pool.setProtection("v", "1s for 1m");
    let now = Date.UTC(2026, 10, 30, 0, 0, 0);
    const scheduler = new PointScheduler({ pool, now: () => now, tickMs: 0 });
    held = true;
    const steps = [];
    for (let i = 0; i < 2; i++) {
      await writeChunk("v", i, i + 1);
      const step = scheduler.step();
      const late = new Promise((resolve) => setTimeout(() => resolve("waited for the commit"), 2000));
      const done = await Promise.race([step, late]);
      expect(done).not.toBe("waited for the commit");
      steps.push(await step);
      expect(pool.newestPointMs("v")).toBe(now); // recorded, not yet durable
      now += 1000;
    }
    // Neither is listed nor reported while the commit is held; both are after it.
    expect(pool.listPoints("v")).toEqual([]);
    expect(reported).toBe(0);
    expect(steps.map((s) => s.report.taken)).toEqual([[], []]);
    held = false;
    for (const resolve of waiting.splice(0)) resolve();
    await Promise.all(steps.map((s) => s.durable));
    expect(times("v")).toEqual([now - 2000, now - 1000]);
    expect(steps.map((s) => s.report.taken.length)).toEqual([1, 1]);
    expect(reported).toBe(2);
    await scheduler.stop();
  });

  it("counts a point in the protection lag and the point count only once it is durable", async () => {
    await pool.createVolume("v", 16 * CS);
    await pool.setProtection("v", "1s for 1h");
    await writeChunk("v", 0, 1);
    const old = Date.now() - 60_000;
    await pool.takePoint("v", old);
    await writeChunk("v", 1, 2);
    // Recorded but not committed: a crash now loses it, and nothing lists it yet, so the content
    // written since the old point has no recovery point.
    const name = await pool.recordPoint("v", Date.now());
    expect(name).toBeDefined();
    const before = pool.stats().volumes.find((v) => v.name === "v")!;
    expect(before.protectionLagSeconds).toBeGreaterThanOrEqual(59);
    expect(before.pointCount).toBe(1);
    await pool.commit();
    const after = pool.stats().volumes.find((v) => v.name === "v")!;
    expect(after.protectionLagSeconds).toBe(0);
    expect(after.pointCount).toBe(2);
  });

  it("reports an observer's failure to onError, not as a rejection of the step's commit", async () => {
    await pool.close();
    pool = await Pool.create({
      dir: join(dir, "throwing"),
      sizeBytes: 1024 * CS,
      chunkSize: CS,
      autoCommitMs: 0,
      observer: {
        pointTaken: () => {
          throw new Error("observer broke");
        },
      },
    });
    await pool.createVolume("v", 16 * CS);
    await pool.setProtection("v", "1s for 1m");
    await writeChunk("v", 0, 1);
    const errors: string[] = [];
    const scheduler = new PointScheduler({ pool, tickMs: 0, onError: (_v, err) => errors.push(err.message) });
    // The timer's path tracks `durable` without handling it: a rejection there is unhandled.
    const { durable } = await scheduler.step();
    await durable; // settles: a rejection fails the test
    expect(errors.join()).toContain("observer broke");
    expect(pool.listPoints("v")).toHaveLength(1);
    await scheduler.stop();
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

describe("pinned recovery points", () => {
  it("survive thinning over simulated hours, take no slot of the policy, and survive a reopen", async () => {
    await pool.createVolume("vol", 64 * CS);
    await pool.setProtection("vol", "1m for 10m, 10m for 1h");
    const start = Date.UTC(2026, 10, 30, 0, 0, 0);
    let now = start;
    const scheduler = new PointScheduler({ pool, now: () => now, tickMs: 0 });
    const pointAtMinute = (m: number): string => pool.pointAt("vol", start + m * M).name;
    let pinnedAt5 = "";
    for (let minute = 0; minute < 3 * 60; minute++) {
      now = start + minute * M;
      await writeChunk("vol", minute % 64, (minute % 250) + 1);
      expect((await scheduler.tick()).taken).toHaveLength(1);
      // Exported right after they were taken: minute 5 (the policy keeps it for ten minutes
      // only) and minute 20 (the first of its ten-minute bucket).
      if (minute === 5) pinnedAt5 = (await pool.pinPoint(pointAtMinute(5), true)).name;
      if (minute === 20) expect((await pool.pinPoint(pointAtMinute(20), true)).pinned).toBe(true);
      if (minute === 40) {
        // The pinned point of minute 20 holds no slot: minute 21, now the first unpinned point of
        // that bucket, is the policy's ten-minute point for it.
        expect(times("vol")).toEqual(
          [0, 5, 10, 20, 21, 30, ...[31, 32, 33, 34, 35, 36, 37, 38, 39, 40]].map((m) => start + m * M),
        );
      }
    }
    // At 02:59: the policy's own points are exactly those of the unpinned history (one-minute
    // points 02:50-02:59, ten-minute points 02:00-02:40), and the two pinned ones besides.
    const policyOwn = [120, 130, 140, 150, 160, ...Array.from({ length: 10 }, (_, i) => 170 + i)];
    expect(times("vol")).toEqual([5, 20, ...policyOwn].map((m) => start + m * M));
    expect(
      pool
        .listPoints("vol")
        .filter((p) => p.pinned)
        .map((p) => p.createdAt.getTime()),
    ).toEqual([start + 5 * M, start + 20 * M]);
    expect((await pool.check()).problems).toEqual([]);

    // The pin is in the durable metadata (journal, then checkpoint).
    await pool.close();
    pool = await openPool(false);
    expect(pool.getSnapshot(pinnedAt5).pinned).toBe(true);
    expect(times("vol")).toEqual([5, 20, ...policyOwn].map((m) => start + m * M));

    // Unpinned, a point is the policy's again: the next tick thins it away. Idempotent.
    await pool.pinPoint(pinnedAt5, false);
    expect((await pool.pinPoint(pinnedAt5, false)).pinned).toBeUndefined();
    const again = new PointScheduler({ pool, now: () => now, tickMs: 0 });
    await again.tick();
    expect(() => pool.getSnapshot(pinnedAt5)).toThrow(/does not exist/);
    expect((await pool.check()).ok).toBe(true);
  });

  it("are never deleted for space: the rule deletes only unpinned points", async () => {
    const { clock, scheduler } = await smallProtectedPool({
      poolChunks: 256,
      volume: "big",
      volumeChunks: 256,
      spaceCheckMs: 0,
    });
    const pinned: string[] = [];
    let evicted = 0;
    // Each second rewrites 16 chunks; the first two points are pinned (32 chunks they alone hold).
    for (let s = 0; s < 20; s++) {
      for (let c = 0; c < 16; c++) await writeChunk("big", c, s + 1);
      const report = await scheduler.tick();
      if (s < 2) pinned.push((await pool.pinPoint(report.taken[0]!, true)).name);
      evicted += report.evicted;
      clock.now += 1000;
    }
    expect(evicted).toBeGreaterThan(0);
    // Both pinned points are there, the oldest of the pool, though the rule goes oldest first.
    const left = pool.listPoints("big");
    expect(left.slice(0, 2).map((p) => p.name)).toEqual(pinned);
    expect(left.slice(0, 2).every((p) => p.pinned)).toBe(true);
    // What the rule counts is the unpinned points' space, within the share after every tick.
    const held = [...(await pool.pointSpace()).byVolume.values()].reduce((a, b) => a + b, 0);
    expect(held).toBeLessThanOrEqual(0.25 * (pool.usage().freeBytes + held));
    // Pinned points cannot be deleted as points at all (what thinning and the rule call).
    expect(await pool.deletePoints(pinned)).toEqual([]);
    expect((await pool.check()).problems).toEqual([]);
  });

  it("go with deleteSnapshot, outlive their volume as snapshots, and refuse what is not a point", async () => {
    await pool.createVolume("v", 4 * CS);
    await pool.setProtection("v", "1s for 1m");
    await writeChunk("v", 0, 1);
    const a = (await pool.takePoint("v", 1000))!;
    await writeChunk("v", 0, 2);
    const b = (await pool.takePoint("v", 2000))!;
    await writeChunk("v", 0, 3);
    const c = (await pool.takePoint("v", 3000))!;
    await pool.pinPoint(a.name, true);
    await pool.pinPoint(b.name, true);
    expect(pool.listPoints("v").map((p) => [p.name, p.pinned ?? false])).toEqual([
      [a.name, true],
      [b.name, true],
      [c.name, false],
    ]);
    // DeleteSnapshot of a pinned point deletes it (the pin goes with it); a volume restored
    // from it keeps its content (chunks are counted, not owned).
    await pool.restoreSnapshot(a.name, "from-a");
    await pool.deleteSnapshot(a.name);
    const r = pool.openVolume("from-a");
    expect((await r.read(0, CS)).every((x) => x === 1)).toBe(true);
    r.close();
    expect(() => pool.getSnapshot(a.name)).toThrow(/does not exist/);
    expect(isSnapblockError(await pool.pinPoint(a.name, true).catch((e: unknown) => e), "NOT_FOUND")).toBe(
      true,
    );
    await pool.createSnapshot("v", "mine");
    const notPoint = await pool.pinPoint("mine", true).catch((e: unknown) => e);
    expect(isSnapblockError(notPoint, "INVALID_ARGUMENT")).toBe(true);
    expect(String(notPoint)).toMatch(/not a recovery point/);
    // Deleting the volume deletes its points but, like its snapshots, not the pinned one.
    await pool.deleteVolume("v");
    expect(pool.listSnapshots().map((s) => [s.name, s.pinned ?? false])).toEqual([
      [b.name, true],
      ["mine", false],
    ]);
    const h = pool.openSnapshot(b.name);
    expect((await h.read(0, CS)).every((x) => x === 2)).toBe(true);
    h.close();
    expect((await pool.check()).problems).toEqual([]);
  });
});

describe("the scheduler's cadence", () => {
  it("aims at a fixed grid: at most one tick a slot, the next at once when a tick overran its slot", () => {
    // Slot 10 served, now 10.3 s: wait for 11 s and the aim (50 ms in).
    expect(nextTickDelay(1000, 10, 10_300)).toBe(750);
    // A timer that fired a millisecond early is still in its slot.
    expect(nextTickDelay(1000, 10, 10_049)).toBe(1001);
    // The tick ended in slot 11, which nobody served: now.
    expect(nextTickDelay(1000, 10, 11_200)).toBe(0);
    // A tick of slot 10 that ended in slot 12: one tick now, for slot 12; slot 11, passed over,
    // is not caught up, and after the tick of slot 12 the next waits for slot 13.
    expect(nextTickDelay(1000, 10, 12_400)).toBe(0);
    expect(nextTickDelay(1000, 12, 12_900)).toBe(150);
    expect(nextTickDelay(100, 7, 750)).toBe(60);
  });

  it("takes a point every second under slow ticks, where waiting a period after each tick took fewer", async () => {
    await pool.createVolume("busy", 64 * CS);
    await pool.setProtection("busy", "1s for 10m");
    vi.useFakeTimers({
      toFake: ["setTimeout", "clearTimeout", "Date"],
      now: Date.UTC(2026, 10, 30, 9, 0, 0, 300),
    });
    const run = async (tickCostMs: number): Promise<number[]> => {
      const scheduler = new PointScheduler({ pool, tickMs: 1000 });
      const starts: number[] = [];
      let busy = false;
      const step = scheduler.step.bind(scheduler);
      // Each tick writes first (so no point is skipped) and costs tickCostMs of the clock.
      scheduler.step = async () => {
        busy = true;
        starts.push(Date.now());
        try {
          await writeChunk("busy", starts.length % 64, (starts.length % 250) + 1);
          return await step();
        } finally {
          vi.setSystemTime(Date.now() + tickCostMs);
          busy = false;
        }
      };
      scheduler.start();
      const end = Date.now() + 60_000;
      while (Date.now() < end) {
        await vi.advanceTimersByTimeAsync(10);
        // The tick's pool I/O is real: let it finish before the clock moves on.
        for (let i = 0; busy && i < 10_000; i++) await new Promise((r) => setImmediate(r));
      }
      await scheduler.stop();
      return starts;
    };
    try {
      const fast = await run(600);
      // A tick in every one of the 60 seconds (the first at the first slot after start).
      expect(fast.length).toBeGreaterThanOrEqual(59);
      const slots = fast.map((t) => Math.floor(t / 1000));
      expect(new Set(slots).size).toBe(slots.length);
      // Ticks that overrun their slot are not caught up: still one a slot at most, never two in a row.
      const slow = await run(1300);
      const slowSlots = slow.map((t) => Math.floor(t / 1000));
      expect(new Set(slowSlots).size).toBe(slowSlots.length);
      expect(slow.length).toBeGreaterThanOrEqual(40);
      // A tick that overran its slot is followed at once by the next (in a later slot), never
      // by a burst, and never after waiting out another slot.
      for (let i = 1; i < slow.length; i++) {
        expect(slow[i]! - slow[i - 1]!).toBeGreaterThanOrEqual(1300);
        expect(slow[i]! - slow[i - 1]!).toBeLessThan(1300 + 1000);
      }
    } finally {
      vi.useRealTimers();
    }
    expect(pool.listPoints("busy").length).toBeGreaterThan(59);
  });
});
