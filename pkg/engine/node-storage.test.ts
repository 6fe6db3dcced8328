import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { splitAtBoundaries } from "./node-file.js";
import { NodeStorage, ReadPlacement, type IoMode } from "./node-storage.js";
import { Prng } from "./prng.js";

/** Feeds `count` reads taking `us(i)` microseconds; returns how many ran inline. */
function feed(p: ReadPlacement, count: number, us: (i: number) => number): number {
  let inline = 0;
  for (let i = 0; i < count; i++) {
    if (!p.inline()) continue;
    inline++;
    p.inlineTook(us(i));
  }
  return inline;
}

describe("ReadPlacement (which small reads run inline)", () => {
  it("keeps reads inline through preempted outliers, however slow each one is", () => {
    const p = new ReadPlacement(40, 100);
    // One read in ten takes 5 ms (a preempted cache hit on a busy node); the rest 3 us.
    expect(feed(p, 10_000, (i) => (i % 10 === 9 ? 5000 : 3))).toBe(10_000);
    // Even bursts of 16 slow reads in a row (half of each window) stay inline.
    expect(feed(new ReadPlacement(40, 100), 3_200, (i) => (i % 32 < 16 ? 900 : 3))).toBe(3_200);
  });

  it("moves reads to the thread pool when most of the recent ones miss the cache, and probes again later", () => {
    const p = new ReadPlacement(40, 100);
    let inline = 0;
    // The 17th slow read of a window trips it: the next 99 reads go to the thread pool.
    for (let i = 0; i < 17; i++) {
      expect(p.inline()).toBe(true);
      p.inlineTook(150);
      inline++;
    }
    for (let i = 0; i < 99; i++) expect(p.inline()).toBe(false);
    // Then inline again, with a fresh window: cache hits stay inline.
    expect(feed(p, 1000, () => 2)).toBe(1000);
    expect(inline).toBe(17);
  });

  it("offloads a cold working set almost entirely: 17 inline probes per reprobe period", () => {
    const p = new ReadPlacement(40, 2000);
    const inline = feed(p, 20_170, () => 200);
    // 10 periods of 17 inline reads and 1999 pooled, then a last probe window of 17.
    expect(inline).toBeLessThanOrEqual(11 * 17);
    expect(inline).toBeGreaterThanOrEqual(10 * 17);
  });

  it("trips on a mostly-slow mix (60 % misses), not on a mostly-fast one (30 %)", () => {
    const slowShare = (share: number) => (i: number) => ((i * 37) % 100 < share ? 300 : 3);
    expect(feed(new ReadPlacement(40, 1000), 5000, slowShare(60))).toBeLessThan(1000);
    expect(feed(new ReadPlacement(40, 1000), 5000, slowShare(30))).toBe(5000);
  });
});

describe("splitAtBoundaries (buffered data-file writes cut at 64 KiB of the file)", () => {
  it("keeps every byte in order, in pieces that never cross a boundary", () => {
    const rng = new Prng(7);
    const cap = 64 * 1024;
    for (let trial = 0; trial < 300; trial++) {
      const position = rng.int(4 * cap);
      const buffers = Array.from({ length: 1 + rng.int(4) }, () =>
        Prng.fill(Buffer.alloc(rng.int(3 * cap)), trial),
      );
      const pieces = splitAtBoundaries(buffers, position, cap);
      let pos = position;
      for (const p of pieces) {
        expect(p.position).toBe(pos);
        const len = p.buffers.reduce((n, b) => n + b.length, 0);
        expect(len).toBeGreaterThan(0);
        expect(Math.floor(p.position / cap)).toBe(Math.floor((p.position + len - 1) / cap));
        pos += len;
      }
      const total = buffers.reduce((n, b) => n + b.length, 0);
      if (total === 0) continue;
      expect(pos).toBe(position + total);
      expect(Buffer.concat(pieces.flatMap((p) => p.buffers)).equals(Buffer.concat(buffers))).toBe(true);
    }
  });

  it("returns a write inside one piece as it is", () => {
    const b = Buffer.alloc(4096);
    expect(splitAtBoundaries([b], 60 * 1024, 64 * 1024)).toEqual([{ position: 60 * 1024, buffers: [b] }]);
  });

  it.each<IoMode>(["inline", "adaptive"])(
    "a data file written in large pieces reads back the same (%s)",
    async (io) => {
      const dir = await mkdtemp(join(tmpdir(), "snapblock-node-storage-"));
      try {
        const storage = await NodeStorage.create(dir, { io });
        const file = await storage.open("data", { create: true, bulk: true });
        const data = Prng.fill(Buffer.alloc(3 << 20), 3);
        // 1 MiB + 12 KiB at an unaligned start: pieces on the thread pool (adaptive) or inline.
        await file.write([data.subarray(0, 1 << 20), data.subarray(1 << 20, (1 << 20) + 12288)], 20480);
        // Below the large-write threshold, across two boundaries.
        await file.write([data.subarray(2 << 20, (2 << 20) + 200 * 1024)], 5 << 20);
        const back = Buffer.alloc((1 << 20) + 12288);
        expect(await file.read(back, 0, back.length, 20480)).toBe(back.length);
        expect(back.equals(data.subarray(0, (1 << 20) + 12288))).toBe(true);
        const back2 = Buffer.alloc(200 * 1024);
        await file.read(back2, 0, back2.length, 5 << 20);
        expect(back2.equals(data.subarray(2 << 20, (2 << 20) + 200 * 1024))).toBe(true);
        await file.close();
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  );
});
