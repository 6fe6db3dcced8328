import { asSnapblockError, type SnapblockError } from "../errors/index.js";
import { pointsToKeep } from "./point-retention.js";
import type { PointSpace, Pool } from "./pool.js";
import { parseProtectionPolicy, type ProtectionPolicy } from "./protection-policy.js";
import type { SnapshotInfo } from "./types.js";

/**
 * Default share of the pool's free space that recovery points may hold: points may hold at most
 * this share of the space that would be free without them (free + held by points). A quarter
 * leaves three quarters of that space to the volumes' own growth and to user snapshots.
 */
export const DEFAULT_POINT_SHARE = 0.25;

export interface PointSchedulerOptions {
  pool: Pool;
  /** The clock (ms since the epoch); tests pass a simulated one. Default Date.now. */
  now?: () => number;
  /**
   * How often the scheduler runs by itself, in ms (default 1000; 0: only when tick() is called).
   * Ticks aim at a fixed grid of the process's clock (nextTickDelay), not at a period after the
   * previous tick ended, so a slow tick does not stretch the cadence.
   */
  tickMs?: number;
  /** Share of the pool's free space points may hold, in (0, 1] (default DEFAULT_POINT_SHARE). */
  maxShareOfFree?: number;
  /**
   * Least time between two accountings of the points' space, in ms of the clock (default 10000):
   * the accounting walks the pool's tables, too much to do every second on a large pool. The
   * cheap bound is checked on every tick, and free space falling by more than half the last
   * budget since the last accounting brings the next one forward.
   */
  spaceCheckMs?: number;
  /** A volume's tick failed (the others go on); the scheduler keeps running. */
  onError?: (volume: string, err: SnapblockError) => void;
}

export interface TickReport {
  /** Names of points taken (durable: step() fills this in when its commit is made). */
  taken: string[];
  /** Volumes due for a point that had nothing new written. */
  skipped: string[];
  /** Points deleted by thinning, and to keep points within their share of free space. */
  thinned: number;
  evicted: number;
}

/**
 * Where within its slot of the tick grid a tick aims: a little after the slot begins (slots are
 * whole multiples of the period since the epoch, like the policy's buckets), so that a timer
 * that fires a millisecond early still lands in the slot it was aimed at.
 */
export function tickAimMs(everyMs: number): number {
  return Math.min(50, everyMs / 10);
}

/**
 * How long to wait before the next tick (docs/protection.md, "Taking points"): ticks aim at a
 * fixed grid, slot k being [k * every, (k + 1) * every) of the clock, at most one tick per slot.
 * `servedSlot` is the slot of the last tick. A tick that ended in a later slot than the one it
 * served leaves that slot unserved: the next runs at once (0). Otherwise the next waits for the
 * aim point of the following slot. Slots passed over entirely by a long tick are skipped, not
 * caught up: ticks never bunch.
 */
export function nextTickDelay(everyMs: number, servedSlot: number, nowMs: number): number {
  if (Math.floor(nowMs / everyMs) > servedSlot) return 0;
  return Math.max(0, (servedSlot + 1) * everyMs + tickAimMs(everyMs) - nowMs);
}

/**
 * Takes and thins recovery points for every volume of a pool with a protection policy
 * (docs/protection.md). On each tick, for each protected volume: a point is due when the clock
 * is in a later bucket of the finest interval than the newest point (buckets aligned to the
 * epoch); a due point is skipped when nothing was written since the newest one (Pool.takePoint);
 * then the points the policy no longer keeps (point-retention.ts) are deleted, metadata only.
 * Pinned points (Pool.pinPoint: exported as a user's snapshot) are not thinned and do not take a
 * slot of the policy: the policy's points are chosen among the unpinned ones as if the pinned
 * did not exist. Last, if all unpinned points together hold more than their share of free
 * space, the oldest unpinned points of the pool go first (never a volume's newest), and
 * pointsDeleted reports it with reason "space".
 */
export class PointScheduler {
  private readonly pool: Pool;
  private readonly now: () => number;
  private readonly share: number;
  private readonly policies = new Map<string, ProtectionPolicy | undefined>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<{ report: TickReport; durable: Promise<void> }> | undefined;
  /** Steps' commits not yet made (stop() waits for them). */
  private readonly committing = new Set<Promise<void>>();
  private stopped = false;
  /** The last accounting of the points' space: when, the free space after it, the budget then. */
  private lastSpaceCheck: { atMs: number; freeBytes: number; budgetBytes: number } | undefined;

  constructor(private readonly options: PointSchedulerOptions) {
    this.pool = options.pool;
    this.now = options.now ?? Date.now;
    const share = options.maxShareOfFree ?? DEFAULT_POINT_SHARE;
    if (!(share > 0 && share <= 1)) throw new RangeError(`point share ${share} must be in (0, 1]`);
    this.share = share;
  }

  /**
   * Runs step() once in every slot of tickMs until stop(), the first in the next slot
   * (nextTickDelay: a fixed grid of Date.now, whatever clock `now` is). A step does not wait for
   * its points to be durable: under a write load a commit (the data file's sync) can take longer
   * than a second, and the next second's point is recorded meanwhile, to share the next commit.
   */
  start(): void {
    const every = this.options.tickMs ?? 1000;
    if (every <= 0 || this.timer || this.stopped) return;
    let served = Math.floor(Date.now() / every);
    const loop = (): void => {
      this.timer = setTimeout(
        () => {
          served = Math.floor(Date.now() / every);
          void this.step()
            .catch((err: unknown) => this.options.onError?.("", asSnapblockError(err, "recovery points")))
            .finally(() => {
              if (!this.stopped) loop();
            });
        },
        nextTickDelay(every, served, Date.now()),
      );
      this.timer.unref();
    };
    loop();
  }

  /** Stops the timer and waits for a tick in progress and for its commit. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => undefined);
    await Promise.all(this.committing);
  }

  /** One pass over the protected volumes, returning once its points and deletions are durable. */
  async tick(): Promise<TickReport> {
    const { report, durable } = await this.step();
    await durable;
    return report;
  }

  /**
   * One pass over the protected volumes (passes never overlap: a second call waits its turn):
   * its report, once its points are recorded, and a promise settled when they and its deletions
   * are durable (never rejected: a failed commit goes to onError, and fails the pool).
   */
  async step(): Promise<{ report: TickReport; durable: Promise<void> }> {
    while (this.running) await this.running.catch(() => undefined);
    const running = this.runTick();
    this.running = running;
    try {
      return await running;
    } finally {
      this.running = undefined;
    }
  }

  private track(durable: Promise<void>): void {
    this.committing.add(durable);
    void durable.finally(() => this.committing.delete(durable));
  }

  /**
   * Volumes are ticked together and deletions ride on the points' commit: one commit (one sync of
   * the data file, the expensive part under a write load) per tick for every protected volume of
   * the pool, where a commit per point and another per thinning made slow ticks overrun their
   * slot (BENCHMARKS.md). A deletion still uncommitted at the end of the tick (no point taken
   * after it) gets a commit of its own.
   */
  private async runTick(): Promise<{ report: TickReport; durable: Promise<void> }> {
    const report: TickReport = { taken: [], skipped: [], thinned: 0, evicted: 0 };
    const now = this.now();
    let dropSeq = 0;
    const recorded: { volume: string; name: string }[] = [];
    const volumes = this.pool.protectedVolumes().map(async ({ name, policy: text }) => {
      try {
        dropSeq = Math.max(dropSeq, this.thin(name, text, now, report));
        const point = await this.recordDue(name, text, now, report);
        if (point !== undefined) recorded.push({ volume: name, name: point });
      } catch (err) {
        this.options.onError?.(name, asSnapblockError(err, `recovery points of volume '${name}'`));
      }
    });
    await Promise.all(volumes);
    const evicted = await this.keepWithinShare(now);
    report.evicted = evicted.count;
    dropSeq = Math.max(dropSeq, evicted.seq);
    if (recorded.length === 0 && dropSeq <= this.pool.committedSeq)
      return { report, durable: Promise.resolve() };
    // Taken means durable: the points are reported once the commit that covers them is made.
    // An observer that throws goes to onError too: nobody handles `durable` on the timer's path,
    // so a rejection there would be unhandled (and end the process).
    const durable = this.pool
      .commit()
      .then(
        () => {
          for (const point of recorded) report.taken.push(point.name);
          for (const point of recorded) this.pool.observer.pointTaken?.(point);
        },
        (err: unknown) => this.options.onError?.("", asSnapblockError(err, "committing recovery points")),
      )
      .catch((err: unknown) =>
        this.options.onError?.("", asSnapblockError(err, "reporting recovery points")),
      );
    // Tracked before the step returns: stop() waits for the step, then for what it tracks.
    this.track(durable);
    return { report, durable };
  }

  /**
   * Deletes (uncommitted: runTick) the points the policy no longer keeps, before the tick's point
   * is taken: the newest point until then is kept (pointsToKeep) and thinned at the next tick if
   * the new one makes it redundant. Returns the deletions' last record (0: none).
   */
  private thin(volume: string, text: string, now: number, report: TickReport): number {
    const policy = this.policyOf(text);
    if (!policy) return 0;
    // Pinned points are a user's snapshots: the policy keeps its own among the others.
    const points = this.pool
      .listPoints(volume)
      .filter((p) => !p.pinned)
      .map((p) => ({ name: p.name, atMs: p.createdAt.getTime() }));
    const keep = pointsToKeep(policy.tiers, points, now);
    const drop = points.filter((p) => !keep.has(p)).map((p) => p.name);
    if (drop.length === 0) return 0;
    const { deleted, seq } = this.pool.dropPoints(drop);
    report.thinned += deleted.length;
    if (deleted.length > 0)
      this.pool.observer.pointsDeleted?.({ volume, count: deleted.length, reason: "thinning" });
    return seq;
  }

  /** Records the volume's point if one is due (uncommitted: runTick); returns its name. */
  private async recordDue(
    volume: string,
    text: string,
    now: number,
    report: TickReport,
  ): Promise<string | undefined> {
    const policy = this.policyOf(text);
    if (!policy) return undefined;
    const finest = policy.tiers[0]!.intervalMs;
    // The newest point recorded, durable or not: a point still waiting for its commit counts.
    const newest = this.pool.newestPointMs(volume);
    if (newest !== undefined && Math.floor(now / finest) <= Math.floor(newest / finest)) return undefined;
    const name = await this.pool.recordPoint(volume, now);
    if (name === undefined) report.skipped.push(volume);
    return name;
  }

  /**
   * Deletes (uncommitted: runTick) the pool's oldest points (never a volume's newest) while all
   * points together hold more than `share` of (free + held by points). Returns how many went and
   * the deletions' last record (0: none).
   */
  private async keepWithinShare(now: number): Promise<{ count: number; seq: number }> {
    const none = { count: 0, seq: 0 };
    const usage = this.pool.usage();
    // Points hold at most what is allocated: when even that fits the share, nothing to do (the
    // common case). Without points, nothing to do either.
    if (usage.allocatedBytes * (1 - this.share) <= this.share * usage.freeBytes) return none;
    if (!this.pool.listVolumes().some((v) => this.evictable(v.name).length > 0)) return none;
    const every = this.options.spaceCheckMs ?? 10_000;
    const last = this.lastSpaceCheck;
    // Free space falling fast does not wait for the period: under a heavy random-write load every
    // point holds what the next second rewrites, and ten seconds of that can fill a pool (writes
    // then fail with ENOSPC). A fall of more than half the last budget since the last accounting
    // may be points past their share: account now (at most once a tick).
    const falling = last !== undefined && usage.freeBytes < last.freeBytes - last.budgetBytes / 2;
    if (last !== undefined && now - last.atMs < every && !falling) return none;
    let evicted = 0;
    let seq = 0;
    const perVolume = new Map<string, number>();
    const total = (space: PointSpace): number => [...space.byVolume.values()].reduce((a, b) => a + b, 0);
    let space = await this.pool.pointSpace();
    let held = total(space);
    const budgetFor = (heldBytes: number): number =>
      Math.floor(this.share * (this.pool.usage().freeBytes + heldBytes));
    const first = { held, budget: budgetFor(held) };
    while (held > budgetFor(held)) {
      const victim = this.oldestEvictable();
      if (!victim) break;
      const dropped = this.pool.dropPoints([victim.name]);
      if (dropped.deleted.length === 0) break;
      seq = dropped.seq;
      evicted++;
      perVolume.set(victim.volume, (perVolume.get(victim.volume) ?? 0) + 1);
      // Deleting one point gives back exactly what it alone mapped, so the accounting made before
      // it says what the points hold now without another pass. Only when that is still too much
      // is the next victim's share needed, and it changed: what the deleted point shared with it
      // alone is now its own. So: account again (in slices, I/O goes on meanwhile).
      held -= space.exclusive.get(victim.name) ?? 0;
      if (held <= budgetFor(held)) break;
      space = await this.pool.pointSpace();
      held = total(space);
    }
    this.lastSpaceCheck = {
      atMs: now,
      freeBytes: this.pool.usage().freeBytes,
      budgetBytes: first.budget,
    };
    for (const [volume, count] of perVolume) {
      this.pool.observer.pointsDeleted?.({
        volume,
        count,
        reason: "space",
        heldBytes: first.held,
        budgetBytes: first.budget,
      });
    }
    return { count: evicted, seq };
  }

  /** Points of a volume the space rule may delete: unpinned, and not the volume's newest. */
  private evictable(volume: string): SnapshotInfo[] {
    return this.pool
      .listPoints(volume)
      .slice(0, -1)
      .filter((p) => !p.pinned);
  }

  private oldestEvictable(): { name: string; volume: string } | undefined {
    let best: { name: string; volume: string; at: number } | undefined;
    for (const vol of this.pool.listVolumes()) {
      for (const p of this.evictable(vol.name)) {
        const at = p.createdAt.getTime();
        if (!best || at < best.at) best = { name: p.name, volume: vol.name, at };
      }
    }
    return best;
  }

  private policyOf(text: string): ProtectionPolicy | undefined {
    if (!this.policies.has(text)) this.policies.set(text, parseProtectionPolicy(text));
    return this.policies.get(text);
  }
}
