import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { isSnapblockError } from "../errors/index.js";
import { FaultStorage, Pool, Prng, accountSpace, accountSpaceSliced } from "./index.js";

const BLOCK = 4096;

/**
 * Volume "v" of one chunk (all bytes 1), then `n` snapshots s0, s1, ... with one 4 KiB block
 * written after each: the first write makes a partial chunk over the original chunk B, each later
 * one redirects the shared partial chunk to a new one over the same B (data-path.ts,
 * partialOver), so `n` partial chunks back on B, all durable. Returns each snapshot's content and
 * the volume's.
 */
async function partialsOverOneBacking(
  pool: Pool,
  n: number,
): Promise<{ expected: Map<string, Buffer>; content: Buffer }> {
  await pool.createVolume("v", CS);
  const h = pool.openVolume("v");
  const expected = new Map<string, Buffer>();
  const content = Buffer.alloc(CS, 1);
  await h.write(0, content);
  for (let i = 0; i < n; i++) {
    await pool.createSnapshot("v", `s${i}`);
    expected.set(`s${i}`, Buffer.from(content));
    const block = Buffer.alloc(BLOCK, 10 + i);
    await h.write(i * 2 * BLOCK, block);
    block.copy(content, i * 2 * BLOCK);
  }
  await h.flush();
  h.close();
  return { expected, content };
}

/** The filler runs in the background after deletes: give it time, then make it durable. */
async function settle(pool: Pool): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 10));
  await pool.commit();
}
let CS = 64 * 1024;
let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "snapblock-space-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The figures the accounting must give, counted the slow way: every logical chunk of every device. */
interface BruteForce {
  exclusive: Map<string, number>;
  mapped: Map<string, number>;
  snapshotOnly: Map<string, number>;
  shared: number;
  reclaimable: number;
}

function bruteForce(pool: Pool): BruteForce {
  const holders = new Map<number, Set<number>>();
  const mapped = new Map<string, number>();
  const key = (kind: string, name: string): string => `${kind}:${name}`;
  for (const d of pool.meta.devices.values()) {
    let n = 0;
    // Every mapping of the table, sharing and reference counts ignored.
    pool.tables.forEachMapped(d.table, (_c, p) => {
      n++;
      let set = holders.get(p);
      if (!set) holders.set(p, (set = new Set()));
      if (set.has(d.id)) throw new Error(`device ${d.name} maps chunk ${p} twice`);
      set.add(d.id);
    });
    mapped.set(key(d.kind, d.name), n);
  }
  const exclusive = new Map<string, number>();
  const snapshotOnly = new Map<string, number>();
  let shared = 0;
  for (const d of pool.meta.devices.values()) exclusive.set(key(d.kind, d.name), 0);
  for (const v of pool.meta.volumes.values()) snapshotOnly.set(v.name, 0);
  const volumeName = new Map([...pool.meta.volumes.values()].map((v) => [v.id, v.name]));
  for (const set of holders.values()) {
    const ds = [...set].map((id) => pool.meta.devices.get(id)!);
    if (ds.length === 1) {
      const k = key(ds[0]!.kind, ds[0]!.name);
      exclusive.set(k, exclusive.get(k)! + 1);
    } else shared++;
    const sources = new Set(ds.map((d) => (d.kind === "snapshot" ? d.sourceId : -1)));
    const [only] = sources;
    if (sources.size === 1 && only !== undefined && only > 0 && volumeName.has(only)) {
      const name = volumeName.get(only)!;
      snapshotOnly.set(name, snapshotOnly.get(name)! + 1);
    }
  }
  let reclaimable = 0;
  const backings = new Set<number>();
  for (const p of pool.space.partials.values()) if (p.backing >= 0) backings.add(p.backing);
  for (const b of backings) if (!holders.has(b)) reclaimable++;
  return { exclusive, mapped, snapshotOnly, shared, reclaimable };
}

function expectAccountMatches(pool: Pool, step: string): void {
  const truth = bruteForce(pool);
  const st = pool.stats();
  const actual = {
    volumes: st.volumes.map((v) => ({
      name: v.name,
      mapped: v.totalBytes / CS,
      exclusive: v.exclusiveBytes / CS,
      shared: v.sharedBytes / CS,
      snapshotOnly: v.snapshotOnlyBytes / CS,
    })),
    snapshots: st.snapshots.map((s) => ({
      name: s.name,
      mapped: s.totalBytes / CS,
      exclusive: s.exclusiveBytes / CS,
      shared: s.sharedBytes / CS,
    })),
    sharedChunks: st.sharedChunks,
    exclusiveChunks: st.exclusiveChunks,
    reclaimable: st.reclaimableBytes / CS,
    allocated: st.allocatedBytes / CS,
  };
  const exclusiveSum = [...truth.exclusive.values()].reduce((a, b) => a + b, 0);
  const device = (kind: string, name: string) => {
    const mapped = truth.mapped.get(`${kind}:${name}`)!;
    const exclusive = truth.exclusive.get(`${kind}:${name}`)!;
    return { name, mapped, exclusive, shared: mapped - exclusive };
  };
  expect(actual, step).toEqual({
    volumes: st.volumes.map((v) => ({
      ...device("volume", v.name),
      snapshotOnly: truth.snapshotOnly.get(v.name),
    })),
    snapshots: st.snapshots.map((s) => device("snapshot", s.name)),
    sharedChunks: truth.shared,
    exclusiveChunks: exclusiveSum,
    reclaimable: truth.reclaimable,
    // Every chunk in use is someone's, shared, or on its way back.
    allocated: exclusiveSum + truth.shared + truth.reclaimable,
  });
}

/**
 * A random history: volumes written whole and in 4 KiB pieces (partial chunks), snapshots,
 * restores, clones, trims, resizes and deletions, with the filler off so that partial chunks and
 * their backing references stay. After every step the accounting is checked against the brute
 * force count, and now and then a device is deleted to check that exclusive bytes are exactly
 * what the deletion gives back.
 */
async function randomHistory(
  seed: number,
  steps: number,
  shape: { chunkSize: number; maxVolumeChunks: number },
): Promise<void> {
  const rng = new Prng(seed);
  CS = shape.chunkSize;
  // In memory (the fault-injecting storage without faults): the subject is metadata, not disks.
  const pool = await Pool.create({
    storage: new FaultStorage({ seed }),
    sizeBytes: 2048 * CS,
    chunkSize: CS,
    autoCommitMs: 0,
    fillPartials: false,
  });
  let serial = 0;
  try {
    await pool.createVolume("v0", 24 * CS);
    for (let step = 0; step < steps; step++) {
      const volumes = pool.listVolumes();
      const snapshots = pool.listSnapshots();
      const op = rng.int(100);
      const label = `seed ${seed} step ${step}`;
      try {
        if (volumes.length === 0 || op < 5) {
          await pool.createVolume(`v${++serial}`, (1 + rng.int(shape.maxVolumeChunks)) * CS);
        } else if (op < 40) {
          const v = rng.pick(volumes);
          const h = pool.openVolume(v.name);
          const chunks = v.sizeBytes / CS;
          const at = rng.int(chunks);
          if (CS === BLOCK || rng.chance(0.5)) {
            const n = 1 + rng.int(Math.min(4, chunks - at));
            await h.write(at * CS, Prng.fill(Buffer.alloc(n * CS), seed * 1000 + step));
          } else {
            const blocks = CS / BLOCK;
            const b = rng.int(blocks);
            const len = 1 + rng.int(blocks - b);
            await h.write(at * CS + b * BLOCK, Prng.fill(Buffer.alloc(len * BLOCK), step));
          }
          h.close();
        } else if (op < 58) {
          await pool.createSnapshot(rng.pick(volumes).name, `s${++serial}`);
        } else if (op < 66 && snapshots.length > 0) {
          const s = rng.pick(snapshots);
          await pool.restoreSnapshot(s.name, `v${++serial}`, {
            sizeBytes: s.sizeBytes + rng.int(3) * CS,
          });
        } else if (op < 72) {
          await pool.cloneVolume(rng.pick(volumes).name, `v${++serial}`);
        } else if (op < 78) {
          const v = rng.pick(volumes);
          const h = pool.openVolume(v.name);
          const chunks = v.sizeBytes / CS;
          const at = rng.int(chunks);
          const len = rng.chance(0.5) ? CS * (1 + rng.int(Math.min(3, chunks - at))) : BLOCK;
          await (rng.chance(0.5) ? h.trim(at * CS, len) : h.writeZeroes(at * CS, len));
          h.close();
        } else if (op < 81) {
          const v = rng.pick(volumes);
          await pool.resizeVolume(v.name, v.sizeBytes + (1 + rng.int(4)) * CS);
        } else if (op < 88 && snapshots.length > 0) {
          await deleteAndCheck(pool, "snapshot", rng.pick(snapshots).name, label);
        } else if (op < 92 && volumes.length > 1) {
          await deleteAndCheck(pool, "volume", rng.pick(volumes).name, label);
        } else {
          await pool.commit();
        }
      } catch (err) {
        if (!isSnapblockError(err, "NO_SPACE")) throw err;
      }
      expectAccountMatches(pool, label);
    }
    // In slices (yielding after every step) the same figures, when nothing changes meanwhile.
    expect(await accountSpaceSliced(pool.meta, pool.space, { sliceMs: 0 })).toEqual(
      accountSpace(pool.meta, pool.space),
    );
    const report = await pool.check();
    expect(report.problems).toEqual([]);
  } finally {
    await pool.close();
  }
}

/**
 * Deletes a device and checks that what it gave back, once every partial chunk is completed, is
 * its exclusive bytes plus what was already on its way back (reclaimable). The filler is off in
 * these pools; completePartials() does its work at once.
 */
async function deleteAndCheck(pool: Pool, kind: "volume" | "snapshot", name: string, label: string) {
  const before = pool.stats();
  const own = (kind === "volume" ? before.volumes : before.snapshots).find((d) => d.name === name)!;
  if (kind === "volume") await pool.deleteVolume(name);
  else await pool.deleteSnapshot(name);
  await pool.completePartials();
  const after = pool.stats();
  expect(before.allocatedBytes - after.allocatedBytes, `${label}: deleting ${kind} ${name} frees`).toBe(
    own.exclusiveBytes + before.reclaimableBytes,
  );
  expect(after.reclaimableBytes, `${label}: nothing left to reclaim`).toBe(0);
}

describe("space accounting", () => {
  // Small volumes: one-leaf tables with many partial chunks. Large thin volumes: tables of two
  // and three levels, whose inner nodes are shared and shadowed. 4 KiB chunks have no partials.
  const shapes = [
    { chunkSize: 64 * 1024, maxVolumeChunks: 40 },
    { chunkSize: 64 * 1024, maxVolumeChunks: 3000 },
    { chunkSize: 4096, maxVolumeChunks: 600_000 },
  ];
  it("matches a brute-force count over the tables for random histories", async () => {
    const seeds = Number(process.env.SNAPBLOCK_SPACE_SEEDS ?? 2);
    for (const shape of shapes)
      for (let seed = 1; seed <= seeds; seed++) await randomHistory(seed, 120, shape);
  }, 120_000);

  it("a partial chunk's backing belongs to the snapshot that maps it, not to the volume", async () => {
    CS = 64 * 1024;
    const pool = await Pool.create({
      dir: join(dir, "p"),
      sizeBytes: 64 * CS,
      autoCommitMs: 0,
      fillPartials: false,
    });
    try {
      await pool.createVolume("v", 4 * CS);
      const h = pool.openVolume("v");
      await h.write(0, Buffer.alloc(CS, 1));
      await pool.createSnapshot("v", "s");
      await h.write(BLOCK, Buffer.alloc(BLOCK, 2)); // partial chunk P backed by the snapshot's chunk B
      h.close();
      let st = pool.stats();
      // B: mapped by the snapshot alone (P's reference on it is not a mapping); P: the volume's.
      expect(st.snapshots[0]).toMatchObject({ totalBytes: CS, exclusiveBytes: CS, sharedBytes: 0 });
      expect(st.volumes[0]).toMatchObject({
        totalBytes: CS,
        exclusiveBytes: CS,
        snapshotOnlyBytes: CS,
        snapshotCount: 1,
      });
      expect(st).toMatchObject({
        partialChunks: 1,
        sharedChunks: 0,
        exclusiveChunks: 2,
        reclaimableBytes: 0,
      });
      // Deleting the snapshot: B is no longer mapped; the filler would complete P and free it.
      await pool.deleteSnapshot("s");
      st = pool.stats();
      expect(st.allocatedBytes).toBe(2 * CS);
      expect(st.reclaimableBytes).toBe(CS);
      expect(st.volumes[0]).toMatchObject({ exclusiveBytes: CS, snapshotOnlyBytes: 0, snapshotCount: 0 });
      await pool.completePartials();
      expect(pool.stats()).toMatchObject({ allocatedBytes: CS, reclaimableBytes: 0 });
    } finally {
      await pool.close();
    }
  });

  it("the filler frees a backing chunk that several partial chunks read once no table maps it", async () => {
    CS = 64 * 1024;
    const pool = await Pool.create({ dir: join(dir, "p2"), sizeBytes: 64 * CS, autoCommitMs: 0 });
    try {
      await pool.createVolume("v", CS);
      const h = pool.openVolume("v");
      await h.write(0, Buffer.alloc(CS, 1));
      h.close();
      await pool.createSnapshot("v", "s");
      await pool.restoreSnapshot("s", "w");
      for (const name of ["v", "w"]) {
        const x = pool.openVolume(name);
        await x.write(0, Buffer.alloc(BLOCK, 3)); // both now partial, both backed by the same chunk
        x.close();
      }
      expect(pool.space.backingRefCount(pool.tables.physical(pool.meta.snapshots.get("s")!.table, 0))).toBe(
        2,
      );
      await pool.deleteSnapshot("s");
      for (let i = 0; i < 200 && pool.stats().partialChunks > 0; i++)
        await new Promise((r) => setTimeout(r, 10));
      await pool.commit();
      expect(pool.stats()).toMatchObject({ partialChunks: 0, allocatedBytes: 2 * CS, reclaimableBytes: 0 });
      expect((await pool.check()).ok).toBe(true);
    } finally {
      await pool.close();
    }
  });

  it("partial chunks only snapshots hold are not copied while others share their backing: they go with their snapshots", async () => {
    CS = 64 * 1024;
    const pool = await Pool.create({ dir: join(dir, "p3"), sizeBytes: 64 * CS, autoCommitMs: 0 });
    try {
      const { expected, content } = await partialsOverOneBacking(pool, 4);
      const h = pool.openVolume("v");
      const b = pool.tables.physical(pool.meta.snapshots.get("s0")!.table, 0);
      expect(pool.space.backingRefCount(b)).toBe(4);
      const filledBefore = pool.stats().partialChunks;
      expect(filledBefore).toBe(4);

      // Deleting s0 leaves B mapped by no table. The volume's own partial chunk is completed
      // (one copy); the three that snapshots s1-s3 hold are not copied.
      await pool.deleteSnapshot("s0");
      await settle(pool);
      expect(pool.stats().partialChunks).toBe(3);
      expect(pool.space.backingRefCount(b)).toBe(3);
      expect(pool.space.refCount(b)).toBe(3);
      for (const [name, want] of expected) {
        if (name === "s0") continue;
        const sh = pool.openSnapshot(name);
        expect((await sh.read(0, CS)).equals(want)).toBe(true);
        sh.close();
      }
      expect((await h.read(0, CS)).equals(content)).toBe(true);

      // As their snapshots go, so do they; the last one's backing goes with it, nothing copied.
      await pool.deleteSnapshot("s1");
      await pool.deleteSnapshot("s2");
      await settle(pool);
      // One left on B: it is completed, which frees B.
      expect(pool.stats().partialChunks).toBe(0);
      expect(pool.space.refCount(b)).toBe(0);
      const s3 = pool.openSnapshot("s3");
      expect((await s3.read(0, CS)).equals(expected.get("s3")!)).toBe(true);
      s3.close();
      await pool.deleteSnapshot("s3");
      await settle(pool);
      expect(pool.stats()).toMatchObject({ partialChunks: 0, allocatedBytes: CS, reclaimableBytes: 0 });
      expect((await h.read(0, CS)).equals(content)).toBe(true);
      h.close();
      expect((await pool.check()).ok).toBe(true);
    } finally {
      await pool.close();
    }
  });

  it("after a reopen (partial chunks from the checkpoint), the filler still copies only the volume's one", async () => {
    CS = 64 * 1024;
    let pool = await Pool.create({ dir: join(dir, "p5"), sizeBytes: 64 * CS, autoCommitMs: 0 });
    try {
      await partialsOverOneBacking(pool, 4);
      await pool.close(); // a clean close writes a checkpoint: the partial chunks come back from it
      pool = await Pool.open({ dir: join(dir, "p5"), autoCommitMs: 0 });
      expect(pool.stats().partialChunks).toBe(4);
      await pool.deleteSnapshot("s0");
      await settle(pool);
      expect(pool.stats().partialChunks).toBe(3);
      expect((await pool.check()).ok).toBe(true);
    } finally {
      await pool.close();
    }
  });

  it("short of space, the filler completes snapshot-held partial chunks too, giving their backing back", async () => {
    CS = 64 * 1024;
    const pool = await Pool.create({ dir: join(dir, "p4"), sizeBytes: 40 * CS, autoCommitMs: 0 });
    try {
      await partialsOverOneBacking(pool, 3);
      const b = pool.tables.physical(pool.meta.snapshots.get("s0")!.table, 0);
      await pool.deleteSnapshot("s0");
      await settle(pool);
      // Plenty of room: the snapshot-held partial chunks wait, and B with them.
      expect(pool.space.refCount(b)).toBe(2);
      // Whole-chunk writes (no partial chunk made) fill the pool past 90%.
      await pool.createVolume("w", 34 * CS);
      const w = pool.openVolume("w");
      await w.write(0, Buffer.alloc(34 * CS, 7));
      await w.flush();
      w.close();
      for (let i = 0; i < 100 && pool.space.refCount(b) > 0; i++) {
        await new Promise((r) => setTimeout(r, 10));
        await pool.commit();
      }
      expect(pool.space.refCount(b)).toBe(0);
      for (const name of ["s1", "s2"]) {
        const sh = pool.openSnapshot(name);
        expect((await sh.read(0, BLOCK)).equals(Buffer.alloc(BLOCK, 10))).toBe(true);
        sh.close();
      }
      expect((await pool.check()).ok).toBe(true);
    } finally {
      await pool.close();
    }
  });

  it("short of space, a new partial chunk its snapshot still backs does not wake a scan of every partial chunk", async () => {
    CS = 64 * 1024;
    const pool = await Pool.create({ dir: join(dir, "p6"), sizeBytes: 40 * CS, autoCommitMs: 0 });
    try {
      await pool.createVolume("v", 8 * CS);
      const v = pool.openVolume("v");
      await v.write(0, Buffer.alloc(8 * CS, 1));
      await pool.createSnapshot("v", "s");
      await v.write(0, Buffer.alloc(BLOCK, 2));
      await v.write(CS, Buffer.alloc(BLOCK, 2));
      // Whole-chunk writes fill the pool past 90 %: 3 chunks of 40 left.
      await pool.createVolume("w", 27 * CS);
      const w = pool.openVolume("w");
      await w.write(0, Buffer.alloc(27 * CS, 7));
      w.close();
      await pool.commit();
      await settle(pool);
      expect(pool.stats().partialChunks).toBe(2);
      // Each of these makes a partial chunk over a chunk snapshot s maps: completing it would
      // free nothing, and nothing else changed, so no write should pay a scan of all of them.
      const scans = vi.spyOn(
        pool as unknown as { partialsWorthFilling: () => number[] },
        "partialsWorthFilling",
      );
      await v.write(2 * CS, Buffer.alloc(BLOCK, 3));
      await v.write(3 * CS, Buffer.alloc(BLOCK, 3));
      expect(scans).not.toHaveBeenCalled();
      scans.mockRestore();
      expect(pool.stats().partialChunks).toBe(4);
      expect((await v.read(2 * CS, CS)).subarray(0, 2 * BLOCK)).toEqual(
        Buffer.concat([Buffer.alloc(BLOCK, 3), Buffer.alloc(BLOCK, 1)]),
      );
      v.close();
      await pool.commit();
      expect((await pool.check()).ok).toBe(true);
    } finally {
      await pool.close();
    }
  });

  /**
   * A pool of 4 KiB chunks with volume "v" mapping one chunk in each of 2,200 leaves: over 4 MiB of
   * tables, well past the size accounted synchronously.
   */
  async function largeTables(seed: number, poolChunks: number) {
    CS = 4096;
    const pool = await Pool.create({
      storage: new FaultStorage({ seed }),
      sizeBytes: poolChunks * CS,
      chunkSize: CS,
      autoCommitMs: 0,
    });
    const leaves = 2200;
    await pool.createVolume("v", leaves * 512 * CS);
    const h = pool.openVolume("v");
    for (let i = 0; i < leaves; i++) await h.write(i * 512 * CS, Buffer.alloc(CS, 1));
    expect(pool.tables.memoryBytes).toBeGreaterThan(4 * 2 ** 20);
    return { pool, h, leaves };
  }

  it("large tables are accounted in slices that let I/O run, serving the last figures meanwhile", async () => {
    const { pool, h, leaves } = await largeTables(9, 8192);
    try {
      const first = pool.stats({ recent: true }); // nothing computed yet: computed at once
      expect(first.volumes[0]).toMatchObject({ totalBytes: leaves * CS, exclusiveBytes: leaves * CS });
      await pool.createSnapshot("v", "s");
      // Right after a change: the last figures (the volume still alone), a sliced computation started.
      expect(pool.stats({ recent: true }).volumes[0]).toMatchObject({ exclusiveBytes: leaves * CS });
      let ticks = 0;
      const ticker = setInterval(() => ticks++, 0);
      const account = await pool.refreshSpace();
      clearInterval(ticker);
      expect(ticks).toBeGreaterThan(0); // the event loop ran between slices
      expect(account).toEqual(pool.spaceAccount());
      const st = pool.stats({ recent: true });
      expect(st.snapshots[0]).toMatchObject({
        totalBytes: leaves * CS,
        exclusiveBytes: 0,
        sharedBytes: leaves * CS,
      });
      expect(st.volumes[0]).toMatchObject({ exclusiveBytes: 0, snapshotOnlyBytes: 0, snapshotCount: 1 });
      // Writes while a sliced computation runs: it finishes, and the next one is exact again.
      const running = pool.refreshSpace();
      for (let i = 0; i < 50; i++) await h.write(i * 512 * CS, Buffer.alloc(CS, 2));
      await running;
      await pool.refreshSpace();
      expect(pool.stats({ recent: true }).volumes[0]).toMatchObject({
        exclusiveBytes: 50 * CS,
        snapshotOnlyBytes: 50 * CS,
      });
      h.close();
    } finally {
      await pool.close();
    }
  }, 60_000);

  it("accounts recovery points in slices on large tables, and each point's own bytes are what deleting it frees", async () => {
    const { pool, h } = await largeTables(11, 16384);
    try {
      // Four points, each followed by a different number of rewritten chunks: the point before
      // them holds the old versions.
      const rewrites = [100, 30, 7, 0];
      const points: string[] = [];
      for (const [p, n] of rewrites.entries()) {
        points.push((await pool.takePoint("v", 1000 * (p + 1)))!.name);
        for (let i = 0; i < n; i++) await h.write(i * 512 * CS, Buffer.alloc(CS, 2 + p));
      }
      let ticks = 0;
      const ticker = setInterval(() => ticks++, 0);
      const space = await pool.pointSpace();
      clearInterval(ticker);
      expect(ticks).toBeGreaterThan(0); // the event loop ran between slices
      // Point p alone holds the versions rewritten before the next point: 100, 30, 7 and none.
      expect(points.map((name) => space.exclusive.get(name))).toEqual([100 * CS, 30 * CS, 7 * CS, 0]);
      expect(space.byVolume.get("v")).toBe(137 * CS);
      // Deleting the oldest frees exactly its own bytes once committed.
      const before = pool.usage().allocatedBytes;
      await pool.deletePoints([points[0]!]);
      await pool.commit();
      expect(before - pool.usage().allocatedBytes).toBe(100 * CS);
      const after = await pool.pointSpace();
      expect(after.byVolume.get("v")).toBe(37 * CS);
      expect(after.exclusive.get(points[1]!)).toBe(30 * CS);
      expect((await pool.check()).problems).toEqual([]);
    } finally {
      await pool.close();
    }
  }, 60_000);
});
