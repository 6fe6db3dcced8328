import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isSnapblockError } from "../errors/index.js";
import type { ByteRange } from "./block-ranges.js";
import type { BlockRangeCursor } from "./block-ranges.js";
import { Pool } from "./pool.js";
import { Prng } from "./prng.js";

const KiB = 1024;
const MiB = 1024 * KiB;

let dir: string;
const pools: Pool[] = [];
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), "snapblock-ranges-"));
});
afterEach(async () => {
  for (const p of pools.splice(0)) await p.close().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

async function newPool(name: string, o: { sizeBytes: number; chunkSize: number; fillPartials?: boolean }) {
  const pool = await Pool.create({ dir: path.join(dir, name), autoCommitMs: 0, ...o });
  pools.push(pool);
  return pool;
}

/** Every page of a cursor, with pages of `limit` ranges (or random sizes from `rng`). */
function drain(cursor: BlockRangeCursor, limit: number | Prng): ByteRange[] {
  const out: ByteRange[] = [];
  while (!cursor.done) {
    const n = typeof limit === "number" ? limit : 1 + limit.int(4);
    const page = cursor.next(n);
    expect(page.length).toBeLessThanOrEqual(n);
    out.push(...page);
  }
  return out;
}

/** The ranges are what the CSI spec asks of a stream: ascending, not overlapping, non-empty. */
function expectWellFormed(ranges: ByteRange[], size: number, from = 0): void {
  let end = from;
  for (const r of ranges) {
    expect(r.length).toBeGreaterThan(0);
    expect(r.offset).toBeGreaterThanOrEqual(end);
    end = r.offset + r.length;
  }
  expect(end).toBeLessThanOrEqual(size);
}

/** Adjacent ranges joined (pages may split a range where a page ends). */
function merged(ranges: ByteRange[]): ByteRange[] {
  const out: ByteRange[] = [];
  for (const r of ranges) {
    const last = out[out.length - 1];
    if (last && last.offset + last.length === r.offset) last.length += r.length;
    else out.push({ ...r });
  }
  return out;
}

function clippedFrom(ranges: ByteRange[], from: number): ByteRange[] {
  return ranges
    .filter((r) => r.offset + r.length > from)
    .map((r) => (r.offset >= from ? r : { offset: from, length: r.offset + r.length - from }));
}

/** The first byte for which `wanted` holds but `map` has no mark (-1: none). */
function firstUncovered(map: Uint8Array, wanted: (byte: number) => boolean): number {
  for (let b = 0; b < map.length; b++) if (map[b] === 0 && wanted(b)) return b;
  return -1;
}

function coverage(ranges: ByteRange[], size: number): Uint8Array {
  const map = new Uint8Array(size);
  for (const r of ranges) map.fill(1, r.offset, r.offset + r.length);
  return map;
}

/** The chunks the ranges touch. */
function chunksOf(ranges: ByteRange[], cs: number): number[] {
  const out: number[] = [];
  for (const r of ranges)
    for (let c = Math.floor(r.offset / cs); c * cs < r.offset + r.length; c++) out.push(c);
  return out;
}

interface Op {
  kind: "write" | "trim" | "zero" | "grow";
  offset: number;
  length: number;
}

describe("changed-block tracking from the chunk tables", () => {
  // Random histories: writes, trims and zeroes of random sizes, a grow, snapshots in between.
  // For every pair of snapshots, the delta covers every byte that differs (read back through the
  // engine) and reports nothing outside the chunks the history touched between them; the
  // allocated ranges cover every non-zero byte and nothing outside the chunks ever touched.
  for (const fillPartials of [false, true]) {
    for (const seed of [1, 2, 3]) {
      it(`random histories (seed ${seed}, partial chunks ${fillPartials ? "completed in the background" : "kept"})`, async () => {
        const CS = 16 * KiB;
        const rng = new Prng(seed * 7919);
        const pool = await newPool("p", { sizeBytes: 32 * MiB, chunkSize: CS, fillPartials });
        let size = 48 * CS;
        await pool.createVolume("vol", size);
        const dev = pool.openVolume("vol");
        const history: Op[][] = [];
        const snapshots: string[] = [];
        for (let s = 0; s < 6; s++) {
          const ops: Op[] = [];
          const count = 1 + rng.int(12);
          for (let i = 0; i < count; i++) {
            if (s === 3 && i === 0) {
              const grown = size + 8 * CS + 4096;
              await pool.resizeVolume("vol", grown);
              ops.push({ kind: "grow", offset: size, length: grown - size });
              size = grown;
              continue;
            }
            const offset = rng.int(size / 512) * 512;
            const length = Math.min(size - offset, 512 * (1 + rng.int((3 * CS) / 512)));
            const roll = rng.next();
            if (roll < 0.75) {
              await dev.write(offset, Prng.fill(Buffer.alloc(length), rng.nextU32()));
              ops.push({ kind: "write", offset, length });
            } else if (roll < 0.88) {
              await dev.trim(offset, length);
              ops.push({ kind: "trim", offset, length });
            } else {
              await dev.writeZeroes(offset, length);
              ops.push({ kind: "zero", offset, length });
            }
          }
          history.push(ops);
          const name = `s${s}`;
          await pool.createSnapshot("vol", name);
          snapshots.push(name);
        }
        dev.close();
        if (fillPartials) await pool.completePartials();

        const contents = new Map<string, Buffer>();
        for (const name of snapshots) {
          const h = pool.openSnapshot(name);
          contents.set(name, await h.read(0, h.size));
          h.close();
        }
        /** Chunks an op of epochs (after, upto] touched (where anything may have changed). */
        const touchedChunks = (after: number, upto: number): Set<number> => {
          const set = new Set<number>();
          for (let e = after + 1; e <= upto; e++) {
            for (const op of history[e]!) {
              for (let c = Math.floor(op.offset / CS); c * CS < op.offset + op.length; c++) set.add(c);
            }
          }
          return set;
        };

        for (let j = 0; j < snapshots.length; j++) {
          const target = contents.get(snapshots[j]!)!;
          // Allocated: every non-zero byte, and only chunks some op touched.
          const allocated = drain(pool.allocatedRanges(snapshots[j]!, 0), rng);
          expectWellFormed(allocated, target.length);
          const map = coverage(allocated, target.length);
          expect(
            firstUncovered(map, (b) => target[b] !== 0),
            `a non-zero byte of ${snapshots[j]}`,
          ).toBe(-1);
          const everTouched = touchedChunks(-1, j);
          expect(
            chunksOf(allocated, CS).filter((c) => !everTouched.has(c)),
            "allocated, never written",
          ).toEqual([]);

          for (let i = 0; i < j; i++) {
            const base = contents.get(snapshots[i]!)!;
            const delta = drain(pool.changedRanges(snapshots[i]!, snapshots[j]!, 0), rng);
            expectWellFormed(delta, target.length);
            const reported = coverage(delta, target.length);
            const differs = (b: number): boolean => (b < base.length ? base[b]! : 0) !== target[b];
            expect(
              firstUncovered(reported, differs),
              `a byte that differs between ${snapshots[i]} and ${snapshots[j]}`,
            ).toBe(-1);
            // Over-reporting is bounded by chunk rounding of what happened in between.
            const touched = touchedChunks(i, j);
            expect(
              chunksOf(delta, CS).filter((c) => !touched.has(c)),
              `reported, untouched ${i}..${j}`,
            ).toEqual([]);
            // Resuming anywhere gives the rest of the same answer.
            const whole = merged(drain(pool.changedRanges(snapshots[i]!, snapshots[j]!, 0), 1_000_000));
            expect(merged(delta)).toEqual(whole);
            const from = rng.int(target.length + 1);
            const resumed = drain(pool.changedRanges(snapshots[i]!, snapshots[j]!, from), rng);
            expectWellFormed(resumed, target.length, from);
            expect(merged(resumed)).toEqual(clippedFrom(whole, from));
          }
        }
      });
    }
  }

  it("reports 4 KiB blocks where a chunk is partial and whole chunks otherwise", async () => {
    const CS = 64 * KiB;
    const pool = await newPool("p", { sizeBytes: 16 * MiB, chunkSize: CS, fillPartials: false });
    await pool.createVolume("vol", 16 * CS);
    const dev = pool.openVolume("vol");
    await dev.write(0, Buffer.alloc(CS, 1)); // chunk 0 whole
    await dev.write(2 * CS + 8 * KiB, Buffer.alloc(4 * KiB, 2)); // one block of chunk 2 over a hole
    await dev.write(7 * CS + 1000, Buffer.alloc(100, 3)); // part of one block of chunk 7
    await pool.createSnapshot("vol", "s1");
    expect(drain(pool.allocatedRanges("s1", 0), 100)).toEqual([
      { offset: 0, length: CS },
      { offset: 2 * CS + 8 * KiB, length: 4 * KiB },
      { offset: 7 * CS, length: 4 * KiB },
    ]);
    await dev.write(16 * KiB, Buffer.alloc(4 * KiB, 4)); // one block of shared chunk 0
    await dev.write(5 * CS, Buffer.alloc(8 * KiB, 5)); // two blocks over a hole
    await dev.write(9 * CS, Buffer.alloc(CS, 6)); // a whole chunk
    await pool.createSnapshot("vol", "s2");
    expect(drain(pool.changedRanges("s1", "s2", 0), 100)).toEqual([
      { offset: 16 * KiB, length: 4 * KiB },
      { offset: 5 * CS, length: 8 * KiB },
      { offset: 9 * CS, length: CS },
    ]);
    // After another snapshot, a partial write to a whole chunk the snapshot shares (chunk 9):
    // again a partial chunk over it, so only its block counts.
    await dev.write(9 * CS + 12 * KiB, Buffer.alloc(4 * KiB, 7));
    // A write to chunk 0, partial and shared with s2: the redirect makes a new partial chunk over
    // the same backing (data-path.ts, mode "partialOver") holding the old partial's own block
    // (copied) and the written one. Both blocks count: the copied one did not change, but blocks
    // a partial chunk holds itself are reported (never less than what changed).
    await dev.write(40 * KiB, Buffer.alloc(4 * KiB, 8));
    await pool.createSnapshot("vol", "s3");
    expect(drain(pool.changedRanges("s2", "s3", 0), 100)).toEqual([
      { offset: 16 * KiB, length: 4 * KiB },
      { offset: 40 * KiB, length: 4 * KiB },
      { offset: 9 * CS + 12 * KiB, length: 4 * KiB },
    ]);
    // s1 to s3 spans both: chunk 0's two blocks, chunk 5's two blocks, chunk 9 whole (a hole in s1).
    expect(drain(pool.changedRanges("s1", "s3", 0), 100)).toEqual([
      { offset: 16 * KiB, length: 4 * KiB },
      { offset: 40 * KiB, length: 4 * KiB },
      { offset: 5 * CS, length: 8 * KiB },
      { offset: 9 * CS, length: CS },
    ]);
    const s3 = pool.openSnapshot("s3");
    const chunk0 = await s3.read(0, CS);
    s3.close();
    const want = Buffer.alloc(CS, 1);
    want.fill(4, 16 * KiB, 20 * KiB);
    want.fill(8, 40 * KiB, 44 * KiB);
    expect(chunk0.equals(want)).toBe(true);
    dev.close();
  });

  it("refuses what the CSI spec calls invalid: unknown snapshots, other volumes, offsets outside the volume", async () => {
    const pool = await newPool("p", { sizeBytes: 16 * MiB, chunkSize: 64 * KiB });
    await pool.createVolume("a", 4 * MiB);
    await pool.createVolume("b", 4 * MiB);
    await pool.createSnapshot("a", "a1");
    await pool.createSnapshot("a", "a2");
    await pool.createSnapshot("b", "b1");
    const code = (fn: () => unknown): string | undefined => {
      try {
        fn();
        return undefined;
      } catch (err) {
        return isSnapblockError(err) ? err.code : "not a SnapblockError";
      }
    };
    expect(code(() => pool.allocatedRanges("nope", 0))).toBe("NOT_FOUND");
    expect(code(() => pool.changedRanges("a1", "nope", 0))).toBe("NOT_FOUND");
    expect(code(() => pool.changedRanges("a1", "b1", 0))).toBe("INVALID_ARGUMENT");
    expect(code(() => pool.allocatedRanges("a1", -1))).toBe("OUT_OF_RANGE");
    expect(code(() => pool.allocatedRanges("a1", 4 * MiB + 1))).toBe("OUT_OF_RANGE");
    expect(code(() => pool.changedRanges("a1", "a2", 0.5))).toBe("OUT_OF_RANGE");
    // At the very end: nothing more, not an error (a resumed stream that had everything).
    const atEnd = pool.allocatedRanges("a1", 4 * MiB);
    expect(atEnd.done).toBe(true);
    expect(atEnd.next(10)).toEqual([]);
    // A snapshot deleted (and made again under its name) between pages ends the listing.
    const dev = pool.openVolume("a");
    for (let c = 0; c < 40; c += 2) await dev.write(c * 64 * KiB, Buffer.alloc(4096, 1));
    dev.close();
    await pool.createSnapshot("a", "a3");
    const cursor = pool.changedRanges("a1", "a3", 0);
    expect(cursor.next(2)).toHaveLength(2);
    await pool.deleteSnapshot("a3");
    await pool.createSnapshot("a", "a3");
    expect(code(() => cursor.next(2))).toBe("NOT_FOUND");
  });

  it("costs what changed, not the volume's size: 10 MiB changed in 1 TiB as in 1 GiB", async () => {
    const CS = 64 * KiB;
    const measure = async (name: string, size: number) => {
      const pool = await newPool(name, { sizeBytes: 2 * size, chunkSize: CS });
      await pool.createVolume("vol", size);
      const dev = pool.openVolume("vol");
      await dev.write(0, Buffer.alloc(CS, 1));
      await pool.createSnapshot("vol", "before");
      // 10 MiB in 160 chunk-sized writes spread over the first GiB (the same in both volumes).
      for (let i = 0; i < 160; i++) await dev.write(i * 101 * CS, Buffer.alloc(CS, 2 + (i % 200)));
      await pool.createSnapshot("vol", "after");
      dev.close();
      pool.tables.nodesVisited = 0;
      const delta = drain(pool.changedRanges("before", "after", 0), 1000);
      const deltaVisits = pool.tables.nodesVisited;
      pool.tables.nodesVisited = 0;
      const allocated = drain(pool.allocatedRanges("after", 0), 1000);
      const allocatedVisits = pool.tables.nodesVisited;
      return { delta, allocated, deltaVisits, allocatedVisits };
    };
    const small = await measure("small", 1024 * MiB);
    const big = await measure("big", 1024 * 1024 * MiB);
    expect(big.delta).toEqual(small.delta);
    expect(big.delta.reduce((n, r) => n + r.length, 0)).toBe(10 * MiB);
    expect(big.allocated).toEqual(small.allocated);
    // The 1 TiB table has one more level above the same leaves: one more node, not 1024 times more.
    expect(big.deltaVisits).toBeLessThanOrEqual(small.deltaVisits + 2);
    expect(big.allocatedVisits).toBeLessThanOrEqual(small.allocatedVisits + 2);
    expect(big.deltaVisits).toBeLessThan(100);
  });

  it("counts chunks still pending from another node as allocated, and as changed unless both wait for the same", async () => {
    const CS = 64 * KiB;
    const pool = await newPool("p", { sizeBytes: 16 * MiB, chunkSize: CS });
    // A restored volume still filling: chunks 1-3 and 10 are on the source node, not here yet.
    await pool.createFromSource({
      kind: "volume",
      name: "vol",
      sizeBytes: 16 * CS,
      source: "node-x/snap",
      ranges: [
        [1, 3],
        [10, 1],
      ],
    });
    await pool.createSnapshot("vol", "s1");
    expect(drain(pool.allocatedRanges("s1", 0), 100)).toEqual([
      { offset: CS, length: 3 * CS },
      { offset: 10 * CS, length: CS },
    ]);
    const dev = pool.openVolume("vol");
    await dev.write(2 * CS, Buffer.alloc(CS, 9)); // replaces pending chunk 2 whole (no fetch)
    await dev.write(12 * CS, Buffer.alloc(4096, 9));
    dev.close();
    await pool.createSnapshot("vol", "s2");
    // Chunk 2: pending in s1, written in s2. Chunks 1, 3, 10: pending in both from the same source.
    expect(drain(pool.changedRanges("s1", "s2", 0), 100)).toEqual([
      { offset: 2 * CS, length: CS },
      { offset: 12 * CS, length: 4096 },
    ]);
    expect(drain(pool.allocatedRanges("s2", 0), 100)).toEqual([
      { offset: CS, length: 3 * CS },
      { offset: 10 * CS, length: CS },
      { offset: 12 * CS, length: 4096 },
    ]);
  });
});
