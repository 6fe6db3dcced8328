import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isSnapblockError } from "../errors/index.js";
import { Pool, type PoolUsageEvent } from "./index.js";

const CS = 65536;
let dir: string;
let pool: Pool;
let levels: PoolUsageEvent[];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "snapblock-pool-space-"));
  levels = [];
  pool = await Pool.create({
    dir: join(dir, "pool"),
    sizeBytes: 100 * CS,
    autoCommitMs: 0,
    observer: { usageLevel: (e) => levels.push(e) },
  });
});

afterEach(async () => {
  await pool.close().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

async function noSpace(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!isSnapblockError(err, "NO_SPACE")) throw new Error(`expected NO_SPACE, got ${String(err)}`);
  return err.message;
}

async function fill(name: string, fromChunk: number, chunks: number): Promise<void> {
  const h = pool.openVolume(name);
  try {
    await h.write(fromChunk * CS, Buffer.alloc(chunks * CS, 7));
    await h.flush();
  } finally {
    h.close();
  }
}

describe("a filling pool is reported", () => {
  it("reports 80, 90 and 100 percent once each on the way up, and the way down past a margin", async () => {
    await pool.createVolume("v", 200 * CS);
    await fill("v", 0, 79);
    expect(levels).toEqual([]);
    await fill("v", 79, 1);
    expect(levels.map((e) => e.level)).toEqual([80]);
    await fill("v", 80, 5);
    await fill("v", 85, 5);
    expect(levels.map((e) => [e.previous, e.level])).toEqual([
      [0, 80],
      [80, 90],
    ]);
    await fill("v", 90, 10);
    // The write past the last chunk is refused: reported as full (once, not per write).
    await noSpace(fill("v", 100, 1));
    await noSpace(fill("v", 101, 1));
    expect(levels.map((e) => e.level)).toEqual([80, 90, 100]);
    expect(levels[2]).toMatchObject({ usedBytes: 100 * CS, sizeBytes: 100 * CS });
    // Freeing a little stays at 100 (no flapping at the line); freeing more goes down a level.
    const h = pool.openVolume("v");
    await h.trim(0, CS);
    await h.flush();
    expect(levels.map((e) => e.level)).toEqual([80, 90, 100]);
    await h.trim(CS, 4 * CS);
    await h.flush();
    h.close();
    expect(levels.at(-1)).toMatchObject({ previous: 100, level: 90, full: false });
  });

  it("reports the level a pool already has when it opens", async () => {
    await pool.createVolume("v", 100 * CS);
    await fill("v", 0, 92);
    await pool.close();
    levels = [];
    pool = await Pool.open({
      dir: join(dir, "pool"),
      autoCommitMs: 0,
      observer: { usageLevel: (e) => levels.push(e) },
    });
    expect(levels.map((e) => e.level)).toEqual([90]);
  });
});

describe("work that needs real space is refused when the pool cannot hold it", () => {
  it("refuses a full copy larger than the free chunks, before creating anything", async () => {
    await pool.createVolume("v", 100 * CS);
    await fill("v", 0, 60);
    await pool.createSnapshot("v", "s");
    const msg = await noSpace(pool.restoreSnapshot("s", "copy", { fullCopy: true }));
    expect(msg).toMatch(/full copy of snapshot 's' needs 3932160 bytes but the pool has 2621440 free/);
    expect(pool.listVolumes().map((v) => v.name)).toEqual(["v"]);
    // A restore that shares its chunks needs no space and is still fine.
    await pool.restoreSnapshot("s", "shared");
    expect((await pool.check()).ok).toBe(true);
  });

  it("holds the space of a running full copy back from the next one", async () => {
    await pool.createVolume("v", 100 * CS);
    await fill("v", 0, 40);
    await pool.createSnapshot("v", "s");
    await pool.restoreSnapshot("s", "c1", { fullCopy: true }); // needs 40 of the 60 free
    // Free chunks less what c1 may still take stay 20 however far c1 has got: without the hold,
    // c2 would be admitted against 60 free and run out half way.
    const st = pool.stats();
    expect(st.freeBytes - st.copyReservedBytes).toBe(20 * CS);
    await noSpace(pool.restoreSnapshot("s", "c2", { fullCopy: true }));
    expect(await pool.waitForCopy("c1")).toMatchObject({ state: "done", copiedChunks: 40 });
    expect(pool.stats()).toMatchObject({ copyReservedBytes: 0, freeBytes: 20 * CS });
    await noSpace(pool.restoreSnapshot("s", "c2", { fullCopy: true }));
    expect(pool.listVolumes().map((v) => v.name)).toEqual(["v", "c1"]);
    expect((await pool.check()).ok).toBe(true);
  });
});

describe("per-volume snapshot limits", () => {
  it("refuses a snapshot past the count limit, naming the limit", async () => {
    await pool.createVolume("v", 10 * CS);
    const limits = { maxSnapshots: 2, names: { maxSnapshots: "StorageClass parameter x/maxSnapshots" } };
    await pool.createSnapshot("v", "s1", { limits });
    await pool.createSnapshot("v", "s2", { limits });
    const msg = await noSpace(pool.createSnapshot("v", "s3", { limits }));
    expect(msg).toContain("has 2 snapshot(s), its limit of 2 (StorageClass parameter x/maxSnapshots)");
    expect(pool.listSnapshots().map((s) => s.name)).toEqual(["s1", "s2"]);
    // Snapshots of another volume do not count; deleting one makes room.
    await pool.createVolume("w", CS);
    await pool.createSnapshot("w", "w1", { limits });
    await pool.deleteSnapshot("s1");
    await pool.createSnapshot("v", "s3", { limits });
  });

  it("two snapshots racing for the last place: exactly one gets it", async () => {
    await pool.createVolume("v", 10 * CS);
    const limits = { maxSnapshots: 1 };
    const results = await Promise.allSettled([
      pool.createSnapshot("v", "a", { limits }),
      pool.createSnapshot("v", "b", { limits }),
    ]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    expect(pool.listSnapshots()).toHaveLength(1);
  });

  it("refuses a snapshot once the volume's snapshots alone hold the space limit", async () => {
    await pool.createVolume("v", 10 * CS);
    await fill("v", 0, 4);
    const limits = { maxSnapshotBytes: 3 * CS };
    await pool.createSnapshot("v", "s1", { limits }); // holds nothing alone yet
    await fill("v", 0, 2); // s1 now alone holds 2 chunks
    await pool.createSnapshot("v", "s2", { limits });
    await fill("v", 2, 1); // 3 chunks held by snapshots only
    expect(pool.stats().volumes[0]).toMatchObject({ snapshotOnlyBytes: 3 * CS, snapshotCount: 2 });
    const msg = await noSpace(pool.createSnapshot("v", "s3", { limits }));
    expect(msg).toContain("hold 196608 bytes that nothing else uses, at or over its limit of 196608 bytes");
    await pool.deleteSnapshot("s1");
    await pool.createSnapshot("v", "s3", { limits });
  });
});
