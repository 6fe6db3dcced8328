import { execFileSync, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { once } from "node:events";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isSnapblockError, type ErrorCode } from "../errors/index.js";
import { FaultStorage } from "./fault-storage.js";
import { Pool } from "./index.js";
import type { Storage, StorageFile } from "./storage.js";

let dir: string;
let pool: Pool;
const CS = 65536;

async function rejects(p: Promise<unknown> | (() => unknown), code: ErrorCode): Promise<string> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (err) {
    if (!isSnapblockError(err)) throw err;
    expect(err.code, err.message).toBe(code);
    expect(err.message.length).toBeGreaterThan(10);
    return err.message;
  }
  throw new Error(`expected ${code}, but the call succeeded`);
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "snapblock-pool-"));
  pool = await Pool.create({ dir: join(dir, "pool"), sizeBytes: 64 * CS, autoCommitMs: 0 });
});

afterEach(async () => {
  await pool.close().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

describe("bad input gets a typed error and changes nothing", () => {
  it("rejects I/O outside the device or with bad numbers", async () => {
    await pool.createVolume("v", 4 * CS);
    const h = pool.openVolume("v");
    await rejects(h.write(4 * CS - 10, Buffer.alloc(11)), "OUT_OF_RANGE");
    await rejects(h.read(4 * CS, 1), "OUT_OF_RANGE");
    await rejects(h.trim(0, 4 * CS + 1), "OUT_OF_RANGE");
    await rejects(h.writeZeroes(5 * CS, 1), "OUT_OF_RANGE");
    await rejects(h.read(-1, 10), "INVALID_ARGUMENT");
    await rejects(h.read(1.5, 10), "INVALID_ARGUMENT");
    await rejects(h.write(Number.MAX_SAFE_INTEGER, Buffer.alloc(1)), "OUT_OF_RANGE");
    await rejects(() => h.extents(0, 4 * CS + 1), "OUT_OF_RANGE");
    // Zero-length I/O is a valid no-op.
    expect((await h.read(4 * CS, 0)).length).toBe(0);
    await h.write(4 * CS, Buffer.alloc(0));
    expect(pool.stats().allocatedBytes).toBe(0);
    h.close();
    expect((await pool.check()).ok).toBe(true);
  });

  it("rejects unknown, duplicate and invalid names", async () => {
    await pool.createVolume("v", CS);
    await pool.createSnapshot("v", "s");
    await rejects(() => pool.getVolume("nope"), "NOT_FOUND");
    await rejects(() => pool.getSnapshot("nope"), "NOT_FOUND");
    await rejects(pool.deleteVolume("nope"), "NOT_FOUND");
    await rejects(pool.deleteSnapshot("nope"), "NOT_FOUND");
    await rejects(pool.createSnapshot("nope", "s2"), "NOT_FOUND");
    await rejects(pool.restoreSnapshot("nope", "r"), "NOT_FOUND");
    await rejects(pool.cloneVolume("nope", "c"), "NOT_FOUND");
    await rejects(() => pool.openVolume("s"), "NOT_FOUND"); // a snapshot is not a volume
    await rejects(pool.createVolume("v", CS), "ALREADY_EXISTS");
    await rejects(pool.createSnapshot("v", "s"), "ALREADY_EXISTS");
    await rejects(pool.restoreSnapshot("s", "v"), "ALREADY_EXISTS");
    await rejects(pool.cloneVolume("v", "v"), "ALREADY_EXISTS");
    for (const bad of ["", "a/b", "../etc", "-lead", ".hidden", "x".repeat(254), "sp ace", "é", "a\nb"]) {
      await rejects(pool.createVolume(bad, CS), "INVALID_ARGUMENT");
      await rejects(pool.createSnapshot("v", bad), "INVALID_ARGUMENT");
    }
    await pool.createVolume("x".repeat(253), CS); // the longest valid name
    expect(pool.listVolumes().map((v) => v.name)).toEqual(["v", "x".repeat(253)]);
    expect(pool.listSnapshots().map((s) => s.name)).toEqual(["s"]);
  });

  it("rejects bad sizes and shrinking", async () => {
    for (const size of [0, -512, 1000, 1.5, Number.NaN])
      await rejects(pool.createVolume("v", size), "INVALID_ARGUMENT");
    await rejects(pool.createVolume("v", 2 ** 51), "OUT_OF_RANGE");
    await pool.createVolume("v", 2 * CS);
    await rejects(pool.resizeVolume("v", CS), "INVALID_ARGUMENT");
    await pool.createSnapshot("v", "s");
    await rejects(pool.restoreSnapshot("s", "r", { sizeBytes: CS }), "OUT_OF_RANGE");
    expect((await pool.resizeVolume("v", 3 * CS)).sizeBytes).toBe(3 * CS);
    expect(pool.getVolume("v").sizeBytes).toBe(3 * CS);
  });

  it("keeps snapshots read-only and in-use devices undeletable", async () => {
    await pool.createVolume("v", CS);
    await pool.createSnapshot("v", "s");
    const s = pool.openSnapshot("s");
    expect(s.readOnly).toBe(true);
    await rejects(s.write(0, Buffer.alloc(1)), "READ_ONLY");
    await rejects(s.trim(0, CS), "READ_ONLY");
    await rejects(pool.deleteSnapshot("s"), "BUSY");
    s.close();
    await rejects(s.read(0, 1), "CLOSED");
    const v = pool.openVolume("v");
    await rejects(pool.deleteVolume("v"), "BUSY");
    v.close();
    await pool.deleteSnapshot("s");
    await pool.deleteVolume("v");
  });

  it("lets one process at a time open a pool, and takes over a dead owner's lock", async () => {
    await rejects(Pool.open({ dir: join(dir, "pool") }), "BUSY");
    await pool.close();
    await writeFile(join(dir, "pool", "lock"), "999999999\n"); // a pid that does not exist
    pool = await Pool.open({ dir: join(dir, "pool"), autoCommitMs: 0 });
    expect((await pool.check()).ok).toBe(true);
  });

  it("takes over the lock of a killed owner that is not reaped yet (a zombie)", async () => {
    // `sleep 0` exits at once; its parent execs into `sleep 30`, which never waits for it.
    const parent = spawn("sh", ["-c", "sleep 0 & echo $!; exec sleep 30"], {
      stdio: ["ignore", "pipe", "ignore"],
    });
    try {
      const [line] = (await once(parent.stdout, "data")) as [Buffer];
      const zombie = Number(line.toString().trim());
      await expect.poll(() => readFileSync(`/proc/${zombie}/stat`, "utf8").split(") ")[1]![0]).toBe("Z");
      await pool.close();
      await writeFile(join(dir, "pool", "lock"), `${zombie}\n`);
      pool = await Pool.open({ dir: join(dir, "pool"), autoCommitMs: 0 });
      expect((await pool.check()).ok).toBe(true);
    } finally {
      parent.kill("SIGKILL");
    }
  });

  it("refuses to create over a pool, to open nothing, and odd chunk sizes", async () => {
    await rejects(Pool.create({ dir: join(dir, "pool"), sizeBytes: 64 * CS }), "ALREADY_EXISTS");
    await rejects(Pool.open({ dir: join(dir, "none") }), "NOT_FOUND");
    await rejects(
      Pool.create({ dir: join(dir, "p2"), sizeBytes: 64 * CS, chunkSize: 3000 }),
      "INVALID_ARGUMENT",
    );
    await rejects(Pool.create({ dir: join(dir, "p3"), sizeBytes: 100 }), "INVALID_ARGUMENT");
    await mkdir(join(dir, "junk"));
    await writeFile(join(dir, "junk", "superblock"), Buffer.alloc(4096, 7));
    const descriptors = async () => (await readdir("/proc/self/fd")).length;
    const before = await descriptors();
    await rejects(Pool.open({ dir: join(dir, "junk") }), "CORRUPT");
    // A refused pool leaves no file open (it was left to the garbage collector: DEP0137).
    expect(await descriptors()).toBe(before);
  });
});

describe("snapshots, restores and clones", () => {
  it("keeps the rest of a shared chunk on a partial write and reads old bytes from the snapshot", async () => {
    await pool.createVolume("v", 4 * CS);
    const v = pool.openVolume("v");
    await v.write(0, Buffer.alloc(2 * CS, 0x11));
    await pool.createSnapshot("v", "s");
    await v.write(100, Buffer.from("new"));
    const s = pool.openSnapshot("s");
    expect((await s.read(98, 7)).toString("hex")).toBe("11111111111111");
    expect((await v.read(98, 7)).toString("hex")).toBe("1111" + Buffer.from("new").toString("hex") + "1111");
    // The write went to a partial chunk backed by the old one; completing it detaches the two.
    await pool.completePartials();
    expect((await v.read(98, 7)).toString("hex")).toBe("1111" + Buffer.from("new").toString("hex") + "1111");
    expect((await s.read(98, 7)).toString("hex")).toBe("11111111111111");
    const st = pool.stats();
    expect(st.volumes[0]).toMatchObject({ totalBytes: 2 * CS, exclusiveBytes: CS, sharedBytes: CS });
    expect(st.snapshots[0]).toMatchObject({ totalBytes: 2 * CS, exclusiveBytes: CS, sharedBytes: CS });
    s.close();
    v.close();
  });

  it("reads into a caller's used buffer exactly what a fresh read gives: holes, whole and partial chunks", async () => {
    await pool.createVolume("v", 6 * CS);
    const v = pool.openVolume("v");
    const model = Buffer.alloc(6 * CS);
    const put = async (offset: number, data: Buffer): Promise<void> => {
      await v.write(offset, data);
      data.copy(model, offset);
    };
    await put(CS, Buffer.alloc(CS, 0x11)); // a whole chunk; chunks 0 and 2..5 stay holes
    await put(3 * CS + 5000, Buffer.alloc(3000, 0x22)); // a block-unaligned write into a hole
    await pool.createSnapshot("v", "s");
    await put(CS + 100, Buffer.from("partial")); // now a partial chunk over the snapshot's
    const used = Buffer.alloc(6 * CS + 10, 0xee);
    const got = await v.read(0, 6 * CS, used);
    expect(got.buffer).toBe(used.buffer);
    expect(got.equals(model)).toBe(true);
    expect(used[6 * CS]).toBe(0xee); // nothing written past the read
    // Unaligned pieces, through the same used buffer.
    used.fill(0xee);
    expect((await v.read(CS - 7, 3 * CS, used)).equals(model.subarray(CS - 7, 4 * CS - 7))).toBe(true);
    v.close();
  });

  it("rewrites a chunk still partial from an earlier snapshot as a new partial chunk, not whole", async () => {
    const merges = { merged: 0, partial: 0 };
    const p = await Pool.create({
      dir: join(dir, "partials"),
      sizeBytes: 64 * CS,
      autoCommitMs: 0,
      fillPartials: false,
      observer: {
        redirected: (e) => {
          merges.merged += e.shared.merged;
          merges.partial += e.shared.partial;
        },
      },
    });
    await p.createVolume("v", 4 * CS);
    const v = p.openVolume("v");
    const model = Buffer.alloc(4 * CS);
    const write = async (off: number, len: number, byte: number): Promise<void> => {
      await v.write(off, Buffer.alloc(len, byte));
      model.fill(byte, off, off + len);
    };
    await write(0, 4 * CS, 0x10);
    const taken: [string, Buffer][] = [];
    // Each round: a snapshot, then writes into chunks that are partial from the round before
    // (the same block, another block, an unaligned range across two blocks).
    for (let round = 1; round <= 3; round++) {
      await p.createSnapshot("v", `s${round}`);
      taken.push([`s${round}`, Buffer.from(model)]);
      await write(8192, 4096, 0x20 + round); // chunk 0: the same block every round
      await write(CS + round * 8192, 4096, 0x30 + round); // chunk 1: another block each round
      await write(2 * CS + 4000 + round * 100, 300, 0x40 + round); // chunk 2: unaligned
    }
    expect(merges).toEqual({ merged: 0, partial: 9 });
    // Each round left its own partial chunks to its snapshot: all read from the original chunk.
    expect(p.space.partials.size).toBe(9);
    for (const c of [...p.space.partials.values()]) expect(c.backing).toBeGreaterThanOrEqual(0);
    const check = async (pool: Pool): Promise<void> => {
      const h = pool.openVolume("v");
      expect((await h.read(0, 4 * CS)).equals(model)).toBe(true);
      h.close();
      for (const [name, content] of taken) {
        const s = pool.openSnapshot(name);
        expect((await s.read(0, 4 * CS)).equals(content), name).toBe(true);
        s.close();
      }
      expect((await pool.check()).problems).toEqual([]);
    };
    v.close();
    await check(p);
    await p.close();
    const again = await Pool.open({ dir: join(dir, "partials"), autoCommitMs: 0, fillPartials: false });
    await check(again);
    // Completing them changes nothing anyone reads.
    await again.completePartials();
    expect(again.space.partials.size).toBe(0);
    await check(again);
    await again.close();
  });

  /** A pool with a low partial-chunk limit, volume "v" of `chunks` chunks (`filled` of them 0x10), snapshot "s". */
  async function snapshotUnderLimit(
    name: string,
    limit: number,
    chunks: number,
    filled = chunks,
    fillPartials = true,
  ): Promise<{ p: Pool; v: ReturnType<Pool["openVolume"]> }> {
    const p = await Pool.create({
      dir: join(dir, name),
      sizeBytes: (chunks + 64) * CS,
      autoCommitMs: 0,
      partialChunkLimit: limit,
      fillPartials,
    });
    await p.createVolume("v", chunks * CS);
    const v = p.openVolume("v");
    await v.write(0, Buffer.alloc(filled * CS, 0x10));
    await p.createSnapshot("v", "s");
    return { p, v };
  }

  it("completes partial chunks past the pool's limit, whatever backs them, changing no content", async () => {
    const { p, v } = await snapshotUnderLimit("pile", 4, 8);
    for (let c = 0; c < 8; c++) await v.write(c * CS + 4096, Buffer.alloc(4096, c + 1));
    // The snapshot holds every backing chunk: only the limit makes the filler complete them.
    for (let i = 0; i < 200 && p.space.partials.size >= 4; i++) await new Promise((r) => setTimeout(r, 10));
    expect(p.space.partials.size).toBeLessThan(4);
    const want = Buffer.alloc(8 * CS, 0x10);
    for (let c = 0; c < 8; c++) want.fill(c + 1, c * CS + 4096, c * CS + 8192);
    expect((await v.read(0, 8 * CS)).equals(want)).toBe(true);
    const s = p.openSnapshot("s");
    expect((await s.read(0, 8 * CS)).equals(Buffer.alloc(8 * CS, 0x10))).toBe(true);
    s.close();
    v.close();
    expect((await p.check()).problems).toEqual([]);
    await p.close();
  });

  it("the filler makes its copies durable every 8 MiB itself, so no commit waits for a pile of them", async () => {
    // Counts the data file's syncs (fdatasync); the storage is in memory, its syncs real in kind.
    let dataSyncs = 0;
    const inner = new FaultStorage({ seed: 5 });
    const storage: Storage = {
      location: inner.location,
      exists: (name) => inner.exists(name),
      rename: (from, to) => inner.rename(from, to),
      remove: (name) => inner.remove(name),
      syncDir: () => inner.syncDir(),
      async open(name, options): Promise<StorageFile> {
        const file = await inner.open(name, options);
        if (name !== "data") return file;
        const sync = file.sync.bind(file);
        file.sync = async () => {
          dataSyncs++;
          await sync();
        };
        return file;
      },
    };
    const chunks = 300; // 18.75 MiB to copy in: two filler syncs at 8 MiB
    const p = await Pool.create({ storage, sizeBytes: (2 * chunks + 16) * CS, autoCommitMs: 0 });
    try {
      await p.createVolume("v", chunks * CS);
      const v = p.openVolume("v");
      await v.write(0, Buffer.alloc(chunks * CS, 0x21));
      await p.createSnapshot("v", "s");
      for (let c = 0; c < chunks; c++) await v.write(c * CS + 4096, Buffer.alloc(4096, 0x22));
      expect(p.space.partials.size).toBe(chunks);
      // Deleting the snapshot frees every backing chunk: the filler completes all the partial
      // chunks the volume maps, with no commit after the delete's own.
      await p.deleteSnapshot("s");
      const before = dataSyncs;
      for (let i = 0; i < 500 && p.space.partials.size > 0; i++) await new Promise((r) => setTimeout(r, 10));
      expect(p.space.partials.size).toBe(0);
      expect(dataSyncs - before).toBe(2);
      const want = Buffer.alloc(chunks * CS, 0x21);
      for (let c = 0; c < chunks; c++) want.fill(0x22, c * CS + 4096, c * CS + 8192);
      expect((await v.read(0, chunks * CS)).equals(want)).toBe(true);
      v.close();
      expect((await p.check()).problems).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it("at the partial-chunk limit completes the oldest, down to a sixteenth below it, not one per write", async () => {
    const { p, v } = await snapshotUnderLimit("trim", 32, 40);
    const owners = (): number[] =>
      [...p.space.partials.values()].map((q) => q.owner!.chunk).sort((a, b) => a - b);
    for (let c = 0; c < 31; c++) await v.write(c * CS + 4096, Buffer.alloc(4096, 1));
    expect(p.space.partials.size).toBe(31);
    // The 32nd meets the limit: the two oldest (chunks 0 and 1) are completed, leaving 30.
    await v.write(31 * CS + 4096, Buffer.alloc(4096, 1));
    for (let i = 0; i < 200 && p.space.partials.size > 30; i++) await new Promise((r) => setTimeout(r, 5));
    expect(owners()).toEqual(Array.from({ length: 30 }, (_, i) => i + 2));
    // The next write stays under the limit: nothing is completed.
    await v.write(32 * CS + 4096, Buffer.alloc(4096, 1));
    await new Promise((r) => setTimeout(r, 50));
    expect(p.space.partials.size).toBe(31);
    const want = Buffer.alloc(40 * CS, 0x10);
    for (let c = 0; c <= 32; c++) want.fill(1, c * CS + 4096, c * CS + 8192);
    expect((await v.read(0, 40 * CS)).equals(want)).toBe(true);
    v.close();
    expect((await p.check()).problems).toEqual([]);
    await p.close();
  });

  it("at twice the limit makes no more partial chunks: shared chunks and holes are copied whole", async () => {
    // The filler off: it falling behind, at its worst. Chunks 12..15 stay holes.
    const { p, v } = await snapshotUnderLimit("ceiling", 4, 16, 12, false);
    for (let c = 0; c < 14; c++) await v.write(c * CS + 4096, Buffer.alloc(4096, c + 1));
    expect(p.space.partials.size).toBe(8);
    const want = Buffer.alloc(16 * CS);
    want.fill(0x10, 0, 12 * CS);
    for (let c = 0; c < 14; c++) want.fill(c + 1, c * CS + 4096, c * CS + 8192);
    expect((await v.read(0, 16 * CS)).equals(want)).toBe(true);
    const s = p.openSnapshot("s");
    const before = Buffer.alloc(16 * CS);
    before.fill(0x10, 0, 12 * CS);
    expect((await s.read(0, 16 * CS)).equals(before)).toBe(true);
    s.close();
    v.close();
    expect((await p.check()).problems).toEqual([]);
    await p.close();
    const again = await Pool.open({ dir: join(dir, "ceiling"), fillPartials: false });
    const r = again.openVolume("v");
    expect((await r.read(0, 16 * CS)).equals(want)).toBe(true);
    r.close();
    await again.close();
  });

  it("partial chunks with the same bitmap share one copy of it, given back when the last goes", async () => {
    const { p, v } = await snapshotUnderLimit("bitmaps", 1000, 12);
    for (let c = 0; c < 8; c++) await v.write(c * CS + 4096, Buffer.alloc(4096, 1));
    for (let c = 8; c < 12; c++) await v.write(c * CS, Buffer.alloc(4096, 2));
    const sharing = (): Set<Uint8Array> => new Set([...p.space.partials.values()].map((q) => q.valid));
    expect(p.space.partials.size).toBe(12);
    expect(sharing().size).toBe(2);
    const twoPatterns = p.space.partialBytes;
    // A second block into one of them (in place: the volume owns it) gives it a third pattern.
    await v.write(CS + 8192, Buffer.alloc(4096, 3));
    expect(sharing().size).toBe(3);
    expect(p.space.partialBytes).toBeGreaterThan(twoPatterns);
    const want = Buffer.alloc(12 * CS, 0x10);
    for (let c = 0; c < 8; c++) want.fill(1, c * CS + 4096, c * CS + 8192);
    for (let c = 8; c < 12; c++) want.fill(2, c * CS, c * CS + 4096);
    want.fill(3, CS + 8192, CS + 12288);
    expect((await v.read(0, 12 * CS)).equals(want)).toBe(true);
    // The snapshot gone, the filler completes them all: nothing is left of their memory.
    await p.deleteSnapshot("s");
    for (let i = 0; i < 200 && p.space.partials.size > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(p.space.partials.size).toBe(0);
    expect(p.space.partialBytes).toBe(0);
    expect((await v.read(0, 12 * CS)).equals(want)).toBe(true);
    v.close();
    expect((await p.check()).problems).toEqual([]);
    await p.close();
  });

  it("deletes in any order whatever depends on what", async () => {
    await pool.createVolume("v", 4 * CS);
    const v = pool.openVolume("v");
    await v.write(0, Buffer.alloc(4 * CS, 0x22));
    v.close();
    await pool.createSnapshot("v", "s1");
    await pool.restoreSnapshot("s1", "r");
    await pool.createSnapshot("r", "s2");
    await pool.deleteVolume("v");
    await pool.deleteSnapshot("s1");
    const r = pool.openVolume("r");
    expect((await r.read(0, 4 * CS)).equals(Buffer.alloc(4 * CS, 0x22))).toBe(true);
    r.close();
    await pool.deleteVolume("r");
    const s2 = pool.openSnapshot("s2");
    expect((await s2.read(CS, 10)).equals(Buffer.alloc(10, 0x22))).toBe(true);
    s2.close();
    expect(pool.stats().allocatedBytes).toBe(4 * CS);
    await pool.deleteSnapshot("s2");
    expect(pool.stats().allocatedBytes).toBe(0);
    expect((await pool.check()).ok).toBe(true);
  });

  it("computes allocated and changed chunks from the tables", async () => {
    await pool.createVolume("v", 16 * CS);
    const v = pool.openVolume("v");
    await v.write(1 * CS, Buffer.alloc(10, 1));
    await v.write(5 * CS + 7, Buffer.alloc(10, 1));
    await pool.createSnapshot("v", "a");
    await v.write(5 * CS, Buffer.alloc(10, 2));
    await v.write(9 * CS, Buffer.alloc(CS + 1, 2));
    await v.trim(1 * CS, CS);
    await pool.createSnapshot("v", "b");
    v.close();
    expect(pool.allocatedChunks("snapshot", "a").chunks).toEqual([1, 5]);
    expect(pool.allocatedChunks("snapshot", "b").chunks).toEqual([5, 9, 10]);
    expect(pool.changedChunks("a", "b").chunks).toEqual([1, 5, 9, 10]);
    expect(pool.changedChunks("a", "a").chunks).toEqual([]);
    await pool.createVolume("other", CS);
    await pool.createSnapshot("other", "o");
    await rejects(() => pool.changedChunks("a", "o"), "INVALID_ARGUMENT");
  });

  it("makes a full copy in the background that shares nothing with its source", async () => {
    await pool.createVolume("v", 8 * CS);
    const v = pool.openVolume("v");
    await v.write(0, Buffer.alloc(8 * CS, 0x33));
    v.close();
    await pool.createSnapshot("v", "s");
    const info = await pool.restoreSnapshot("s", "full", { fullCopy: true });
    expect(info.source).toEqual({ kind: "snapshot", name: "s" });
    const done = await pool.waitForCopy("full");
    expect(done).toMatchObject({ state: "done", copiedChunks: 8, totalChunks: 8 });
    const full = pool.stats().volumes.find((x) => x.name === "full")!;
    expect(full).toMatchObject({ totalBytes: 8 * CS, exclusiveBytes: 8 * CS, sharedBytes: 0 });
    await pool.deleteSnapshot("s");
    await pool.deleteVolume("v");
    const h = pool.openVolume("full");
    expect((await h.read(0, 8 * CS)).equals(Buffer.alloc(8 * CS, 0x33))).toBe(true);
    h.close();
    expect((await pool.check()).ok).toBe(true);
  });

  it("cancels a background copy, leaving a valid volume that still shares the rest", async () => {
    await pool.createVolume("v", 24 * CS);
    const v = pool.openVolume("v");
    await v.write(0, Buffer.alloc(24 * CS, 0x5a));
    v.close();
    await pool.createSnapshot("v", "s");
    await pool.restoreSnapshot("s", "copy", { fullCopy: true });
    const stopped = await pool.cancelCopy("copy");
    expect(stopped?.state).toBe("cancelled");
    expect(stopped!.copiedChunks).toBeLessThan(24);
    expect(pool.getVolume("copy").copy).toMatchObject({ state: "cancelled", totalChunks: 24 });
    const copy = pool.stats().volumes.find((x) => x.name === "copy")!;
    expect(copy.sharedBytes).toBeGreaterThan(0);
    const h = pool.openVolume("copy");
    expect((await h.read(0, 24 * CS)).equals(Buffer.alloc(24 * CS, 0x5a))).toBe(true);
    h.close();
    expect((await pool.check()).ok).toBe(true);
  });

  it("gives trimmed space back to the pool", async () => {
    await pool.createVolume("v", 8 * CS);
    const v = pool.openVolume("v");
    await v.write(0, Buffer.alloc(8 * CS, 1));
    expect(pool.stats().allocatedBytes).toBe(8 * CS);
    await v.trim(CS / 2, 6 * CS); // chunks 1..5 whole, halves of 0 and 6 zeroed
    expect(pool.stats().allocatedBytes).toBe(3 * CS);
    expect((await v.read(CS / 2 - 1, 2)).toString("hex")).toBe("0100");
    expect(v.extents(0, 8 * CS)).toEqual([
      { offset: 0, length: CS, allocated: true },
      { offset: CS, length: 5 * CS, allocated: false },
      { offset: 6 * CS, length: 2 * CS, allocated: true },
    ]);
    v.close();
    expect((await pool.check()).ok).toBe(true);
  });

  it("redirects an uncontended first write after a snapshot before write() returns", async () => {
    await pool.createVolume("v", 4 * CS);
    const v = pool.openVolume("v");
    await v.write(0, Buffer.alloc(4 * CS, 1));
    await pool.createSnapshot("v", "s");
    const before = pool.stats();
    // Whole chunk: a new chunk mapped at once. Whole blocks of a shared chunk: a partial chunk.
    const whole = v.write(0, Buffer.alloc(CS, 2));
    const blocks = v.write(CS + 8192, Buffer.alloc(8192, 3));
    const unaligned = v.write(2 * CS + 100, Buffer.alloc(10, 4)); // needs a read: the general path
    const now = pool.stats();
    expect(now.allocatedBytes - before.allocatedBytes).toBe(2 * CS);
    expect(now.partialChunks - before.partialChunks).toBe(1);
    await Promise.all([whole, blocks, unaligned]);
    const expected = Buffer.alloc(4 * CS, 1);
    expected.fill(2, 0, CS);
    expected.fill(3, CS + 8192, CS + 16384);
    expected.fill(4, 2 * CS + 100, 2 * CS + 110);
    expect((await v.read(0, 4 * CS)).equals(expected)).toBe(true);
    const snap = pool.openSnapshot("s");
    expect((await snap.read(0, 4 * CS)).equals(Buffer.alloc(4 * CS, 1))).toBe(true);
    snap.close();
    v.close();
    expect((await pool.check()).ok).toBe(true);
    await pool.close();
    pool = await Pool.open({ dir: join(dir, "pool"), autoCommitMs: 0 });
    expect((await pool.check()).ok).toBe(true);
  });
});

describe("writes to partial chunks", () => {
  it("complete before write() returns, in place or over a new partial chunk after a second snapshot", async () => {
    await pool.close();
    pool = await Pool.open({ dir: join(dir, "pool"), autoCommitMs: 0, fillPartials: false });
    const B = 4096;
    await pool.createVolume("v", 2 * CS);
    const v = pool.openVolume("v");
    await v.write(0, Buffer.alloc(2 * CS, 1));
    await pool.createSnapshot("v", "s1");
    await v.write(1 * B, Buffer.alloc(B, 2)); // chunk 0 becomes partial: block 1 its own
    expect(pool.stats().partialChunks).toBe(1);
    // A read begun right after a write sees it only if the write was done when write() returned.
    const writeThenRead = async (at: number, value: number): Promise<Buffer> => {
      const w = v.write(at, Buffer.alloc(B, value));
      const r = v.read(at, B);
      await w;
      return r;
    };
    // The volume's own partial chunk: in place.
    expect(await writeThenRead(3 * B, 3)).toEqual(Buffer.alloc(B, 3));
    expect(pool.stats().partialChunks).toBe(1);
    await pool.createSnapshot("v", "s2");
    // Now shared with s2: a new partial chunk over the same backing, holding blocks 1-3 (2 written,
    // 1 and 3 copied around it), then block 9 apart from them.
    const before = pool.stats().allocatedBytes;
    expect(await writeThenRead(2 * B, 4)).toEqual(Buffer.alloc(B, 4));
    expect(pool.stats().partialChunks).toBe(2);
    expect(pool.stats().allocatedBytes - before).toBe(CS);
    expect(await writeThenRead(9 * B, 5)).toEqual(Buffer.alloc(B, 5));
    expect(pool.stats().partialChunks).toBe(2);
    const expected = (blocks: [number, number][]): Buffer => {
      const b = Buffer.alloc(2 * CS, 1);
      for (const [block, value] of blocks) b.fill(value, block * B, (block + 1) * B);
      return b;
    };
    const contents = async (h: { read(o: number, l: number): Promise<Buffer> }) => h.read(0, 2 * CS);
    const want = {
      v: expected([
        [1, 2],
        [2, 4],
        [3, 3],
        [9, 5],
      ]),
      s1: expected([]),
      s2: expected([
        [1, 2],
        [3, 3],
      ]),
    };
    const check = async (): Promise<void> => {
      const h = pool.openVolume("v");
      expect((await contents(h)).equals(want.v)).toBe(true);
      h.close();
      for (const s of ["s1", "s2"] as const) {
        const sh = pool.openSnapshot(s);
        expect((await contents(sh)).equals(want[s])).toBe(true);
        sh.close();
      }
      expect((await pool.check()).problems).toEqual([]);
    };
    v.close();
    await check();
    await pool.completePartials();
    await check();
    await pool.close();
    pool = await Pool.open({ dir: join(dir, "pool"), autoCommitMs: 0 });
    await check();
  });
});

describe("observer and stats for metrics", () => {
  it("reports I/O, redirects, commits, sharing and the last check", async () => {
    const events: string[] = [];
    await pool.close();
    pool = await Pool.open({
      dir: join(dir, "pool"),
      autoCommitMs: 0,
      fillPartials: false,
      observer: {
        ioCompleted: (e) => events.push(`${e.op}:${e.device}:${e.bytes}${e.error ? `:${e.error}` : ""}`),
        redirected: (e) =>
          events.push(
            `row:${e.device}:${e.shared.full}/${e.shared.partial}/${e.shared.merged}:${e.fresh.full}/${e.fresh.partial}`,
          ),
        committed: (e) => events.push(`commit:${e.records}`),
      },
    });
    await pool.createVolume("v", 4 * CS);
    const v = pool.openVolume("v");
    await v.write(0, Buffer.alloc(CS, 1));
    await pool.createSnapshot("v", "s");
    await v.write(10, Buffer.alloc(10, 2));
    await v.read(0, 100);
    await v.write(4 * CS, Buffer.alloc(1)).catch(() => undefined);
    await v.flush();
    v.close();
    expect(events).toEqual([
      "commit:1",
      "row:v:0/0/0:1/0",
      "write:v:65536",
      "commit:2",
      "row:v:0/1/0:0/0",
      "write:v:10",
      "read:v:100",
      "write:v:1:OUT_OF_RANGE",
      "commit:1",
      "flush:v:0",
    ]);
    const st = pool.stats();
    // The snapshot alone maps the old chunk (the partial chunk's reference on it is no mapping),
    // the volume alone maps the partial chunk: two exclusive chunks, none shared.
    expect(st).toMatchObject({ partialChunks: 1, sharedChunks: 0, exclusiveChunks: 2, copies: [] });
    expect(st.lastCheck).toBeUndefined();
    await pool.check();
    expect(pool.stats().lastCheck).toMatchObject({ ok: true, problems: 0 });
  });

  it("usage() gives the cheap figures exactly as stats() does, metadata memory included", async () => {
    await pool.createVolume("v", 32 * CS);
    const v = pool.openVolume("v");
    const empty = pool.usage().metadataBytes;
    for (let c = 0; c < 32; c++) await v.write(c * CS, Buffer.alloc(CS, c));
    await pool.createSnapshot("v", "s");
    await v.write(5, Buffer.alloc(5, 9)); // a partial chunk: the space's memory grows too
    v.close();
    const { sizeBytes, allocatedBytes, freeBytes, provisionedBytes, copyReservedBytes, metadataBytes } =
      pool.stats();
    expect(pool.usage()).toEqual({
      sizeBytes,
      allocatedBytes,
      freeBytes,
      provisionedBytes,
      copyReservedBytes,
      metadataBytes,
    });
    expect(metadataBytes).toBeGreaterThan(empty);
  });
});

describe("running out of space", () => {
  it("commits a trim's release instead of failing the next write on a full pool", async () => {
    // Without a commit in between (autoCommitMs 0), the trimmed chunk's release is not yet
    // durable: the write must commit it and take the chunk, not answer NO_SPACE.
    await pool.createVolume("big", 128 * CS);
    const h = pool.openVolume("big");
    await h.write(0, Buffer.alloc(64 * CS, 0x44));
    await h.flush();
    await h.trim(0, CS);
    await h.write(100 * CS, Buffer.alloc(CS, 0x77));
    expect((await h.read(0, CS)).equals(Buffer.alloc(CS))).toBe(true);
    expect((await h.read(100 * CS, CS)).equals(Buffer.alloc(CS, 0x77))).toBe(true);
    expect((await h.read(CS, 63 * CS)).equals(Buffer.alloc(63 * CS, 0x44))).toBe(true);
    h.close();
    expect((await pool.check()).ok).toBe(true);
  });

  it("fails the writer with NO_SPACE, damages nothing, and the pool reopens clean", async () => {
    await pool.createVolume("big", 128 * CS); // thin: larger than the 64-chunk pool
    const h = pool.openVolume("big");
    await h.write(0, Buffer.alloc(60 * CS, 0x44));
    await h.flush();
    const msg = await rejects(h.write(60 * CS, Buffer.alloc(8 * CS, 0x55)), "NO_SPACE");
    expect(msg).toMatch(/pool is full/);
    // The failed write took nothing: what fits still fits, earlier data is intact.
    expect(pool.stats().allocatedBytes).toBe(60 * CS);
    expect((await h.read(0, 60 * CS)).equals(Buffer.alloc(60 * CS, 0x44))).toBe(true);
    expect((await h.read(60 * CS, 8 * CS)).equals(Buffer.alloc(8 * CS))).toBe(true);
    await h.write(60 * CS, Buffer.alloc(4 * CS, 0x66));
    await rejects(h.write(64 * CS, Buffer.alloc(1, 1)), "NO_SPACE");
    // A snapshot holds its chunks: overwriting needs new chunks the pool does not have.
    await pool.createSnapshot("big", "s");
    await rejects(h.write(0, Buffer.alloc(1, 9)), "NO_SPACE");
    await pool.deleteSnapshot("s");
    await h.write(0, Buffer.alloc(1, 9)); // in place again once the snapshot is gone
    h.close();
    expect((await pool.check()).ok).toBe(true);
    await pool.close();
    pool = await Pool.open({ dir: join(dir, "pool"), autoCommitMs: 0 });
    expect((await pool.check()).ok).toBe(true);
    const again = pool.openVolume("big");
    expect((await again.read(0, 2)).toString("hex")).toBe("0944");
    again.close();
  });

  it.skipIf(process.getuid?.() !== 0)(
    "turns a full disk under the pool into NO_SPACE for the writer",
    async () => {
      const mnt = join(dir, "small");
      await mkdir(mnt);
      execFileSync("mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt]);
      const small = await Pool.create({ dir: join(mnt, "pool"), sizeBytes: 64 * CS, autoCommitMs: 0 });
      try {
        await small.createVolume("v", 64 * CS);
        const h = small.openVolume("v");
        await h.write(0, Buffer.alloc(16 * CS, 0x77));
        await h.flush();
        await rejects(h.write(16 * CS, Buffer.alloc(32 * CS, 0x78)), "NO_SPACE");
        expect((await h.read(0, 16 * CS)).equals(Buffer.alloc(16 * CS, 0x77))).toBe(true);
        h.close();
        expect((await small.check()).problems).toEqual([]);
        // Closing writes a checkpoint, which the full disk refuses: a clear error, files closed.
        await small.close().catch((err: unknown) => expect(isSnapblockError(err, "NO_SPACE")).toBe(true));
      } finally {
        await small.close();
        execFileSync("umount", [mnt]);
      }
    },
  );
});
