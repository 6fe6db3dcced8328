import { describe, expect, it } from "vitest";
import { ReadPlacement } from "./node-storage.js";

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
