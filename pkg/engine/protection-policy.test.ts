import { describe, expect, it } from "vitest";
import { SnapblockError } from "../errors/index.js";
import { pointsToKeep } from "./point-retention.js";
import { parseProtectionPolicy, type ProtectionTier } from "./protection-policy.js";

const S = 1000;
const M = 60 * S;
const H = 60 * M;
const D = 24 * H;

function refused(text: string): string {
  try {
    parseProtectionPolicy(text);
  } catch (err) {
    expect(err).toBeInstanceOf(SnapblockError);
    expect((err as SnapblockError).code).toBe("INVALID_ARGUMENT");
    return (err as Error).message;
  }
  throw new Error(`policy ${JSON.stringify(text)} was accepted`);
}

describe("parseProtectionPolicy", () => {
  it("parses the issue's example into tiers and canonical text", () => {
    const p = parseProtectionPolicy("1s for 10m, 1m for 1h, 1h for 1d, 1d for 7d");
    expect(p?.tiers).toEqual([
      { intervalMs: S, windowMs: 10 * M },
      { intervalMs: M, windowMs: H },
      { intervalMs: H, windowMs: D },
      { intervalMs: D, windowMs: 7 * D },
    ]);
    expect(p?.text).toBe("1s for 10m, 1m for 1h, 1h for 1d, 1d for 1w");
  });

  it("canonicalises spacing, case and units", () => {
    expect(parseProtectionPolicy("  60S  FOR 120m ,2h for 48h")?.text).toBe("1m for 2h, 2h for 2d");
  });

  it("reads off and empty as no policy", () => {
    expect(parseProtectionPolicy("off")).toBeUndefined();
    expect(parseProtectionPolicy(" OFF ")).toBeUndefined();
    expect(parseProtectionPolicy("")).toBeUndefined();
  });

  it("refuses malformed and inconsistent policies with a message that says why", () => {
    expect(refused("every second")).toMatch(/not "<interval> for <window>"/);
    expect(refused("1x for 10m")).toMatch(/"1x" is not a duration/);
    expect(refused("0s for 10m")).toMatch(/start at 1s/);
    expect(refused("1m for 30s")).toMatch(/at least the interval/);
    expect(refused("1m for 1h, 1s for 2h")).toMatch(/larger interval than the tier before it \(1m\)/);
    expect(refused("1s for 1h, 1m for 1h")).toMatch(/longer window than the tier before it \(1h\)/);
    expect(refused("1s for 11y")).toMatch(/not a duration/);
    expect(refused("1s for 5000w")).toMatch(/exceeds ten years/);
    expect(refused(Array.from({ length: 9 }, (_, i) => `${i + 1}s for ${i + 2}m`).join(","))).toMatch(
      /at most 8/,
    );
  });
});

/**
 * An independent statement of the rule (docs/protection.md): for each tier, group the points by
 * bucket, and keep each bucket's first point if it is younger than the window; and the newest.
 * Written as a group-by, unlike the implementation's single pass.
 */
function expectedKeep(tiers: ProtectionTier[], times: number[], now: number): number[] {
  const keep = new Set<number>();
  for (const t of tiers) {
    const firstOfBucket = new Map<number, number>();
    for (const at of times) {
      const b = Math.floor(at / t.intervalMs);
      const cur = firstOfBucket.get(b);
      if (cur === undefined || at < cur) firstOfBucket.set(b, at);
    }
    for (const at of firstOfBucket.values()) if (now - at < t.windowMs) keep.add(at);
  }
  if (times.length > 0) keep.add(Math.max(...times));
  return [...keep].sort((a, b) => a - b);
}

describe("pointsToKeep", () => {
  it("keeps one point per bucket within each window, for a point every second over 3 days", () => {
    const policy = parseProtectionPolicy("1s for 10m, 1m for 1h, 1h for 1d, 1d for 7d")!;
    const start = Date.UTC(2026, 10, 1, 0, 0, 0);
    let points: { atMs: number }[] = [];
    // Thin every simulated minute (as the scheduler would every second, but cheaper to run).
    for (let t = start; t <= start + 3 * D; t += S) {
      points.push({ atMs: t });
      if ((t - start) % M === 0) {
        const keep = pointsToKeep(policy.tiers, points, t);
        points = points.filter((p) => keep.has(p));
      }
    }
    const now = start + 3 * D;
    const got = points.map((p) => p.atMs);
    // Thinning more often never keeps fewer: the kept set is the rule applied at `now`.
    expect(got).toEqual(expectedKeep(policy.tiers, got, now));
    // Concrete counts: 600 one-second points in the last 10 minutes; one per minute for the
    // rest of the hour (50 more); one per hour for the rest of the day (23 more); one per day for
    // the days before (3 day-buckets started within the run: day 0, 1, 2 and 3 itself is inside
    // the finer tiers).
    const within = (ms: number): number => got.filter((t) => now - t < ms).length;
    expect(within(10 * M)).toBe(600);
    expect(within(H)).toBe(600 + 50);
    expect(within(D)).toBe(650 + 23);
    expect(got.length).toBe(673 + 3);
    expect(got[0]).toBe(start); // the first point of day 0 is its day's keeper
  });

  it("always keeps the newest point, however old", () => {
    const tiers = parseProtectionPolicy("1s for 10s")!.tiers;
    const points = [{ atMs: 0 }, { atMs: 5000 }];
    expect([...pointsToKeep(tiers, points, 3_600_000)]).toEqual([points[1]]);
  });

  it("keeps the first point of a bucket, not a later one", () => {
    const tiers = parseProtectionPolicy("1s for 2s, 1m for 1h")!.tiers;
    const points = [{ atMs: 60_000 }, { atMs: 61_000 }, { atMs: 62_000 }, { atMs: 130_000 }];
    const keep = pointsToKeep(tiers, points, 130_500);
    expect([...keep].map((p) => p.atMs).sort((a, b) => a - b)).toEqual([60_000, 130_000]);
  });
});
