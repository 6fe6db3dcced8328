import type { ProtectionTier } from "./protection-policy.js";

/**
 * Which recovery points a policy keeps (docs/protection.md, "Thinning"). Buckets are aligned to
 * the Unix epoch: bucket(t, i) = floor(t / interval_i). At time `now` a point taken at `t` is kept
 * when, for some tier i, now - t < window_i and it is the first (oldest) point of its bucket
 * among all points. Taking the first point of a bucket means that the point a coarse tier keeps
 * for a bucket never changes while the bucket fills, so thinning only ever deletes; and the
 * newest point is always kept (its age is below the first window).
 */
export function pointsToKeep<T extends { atMs: number }>(
  tiers: readonly ProtectionTier[],
  points: readonly T[],
  nowMs: number,
): Set<T> {
  const sorted = [...points].sort((a, b) => a.atMs - b.atMs);
  const keep = new Set<T>();
  for (const tier of tiers) {
    let lastBucket: number | undefined;
    for (const p of sorted) {
      const bucket = Math.floor(p.atMs / tier.intervalMs);
      if (bucket === lastBucket) continue; // not the first of its bucket
      lastBucket = bucket;
      if (nowMs - p.atMs < tier.windowMs) keep.add(p);
    }
  }
  const newest = sorted[sorted.length - 1];
  if (newest) keep.add(newest);
  return keep;
}
