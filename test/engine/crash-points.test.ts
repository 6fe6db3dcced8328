import { describe, expect, it } from "vitest";
import {
  FaultStorage,
  PointScheduler,
  Pool,
  Prng,
  parseProtectionPolicy,
  pointsToKeep,
  type PoolOptions,
} from "../../pkg/engine/index.js";

/**
 * Power loss while recovery points are taken and thinned (simulated: the fault-injecting storage
 * loses power at a random I/O instant; unsynced writes survive or not). After each reopen: the
 * consistency check is clean, the policy is still set, no point is found that was never taken,
 * every point reported taken that the policy still keeps is there, and every point holds what the
 * volume held when it was taken. RUNS sets how many crash runs (default 24).
 */
const RUNS = Number(process.env.POINT_CRASH_RUNS ?? 24);
const CS = 4096;
const CHUNKS = 8;
const POLICY = "1s for 5s, 2s for 20s, 10s for 1m";

const stats = { contentsChecked: 0, interruptedTicks: 0 };

async function crashRun(seed: number): Promise<number> {
  const g = new Prng(seed);
  const tiers = parseProtectionPolicy(POLICY)!.tiers;
  const options = (storage: FaultStorage): PoolOptions => ({
    storage,
    autoCommitMs: 0,
    checkpointBytes: g.pick([1024, 8192, 1 << 20]),
  });
  let storage = new FaultStorage({ seed, survival: g.pick([0.2, 0.5, 0.8]) });
  let pool = await Pool.create({ ...options(storage), sizeBytes: 512 * CS, chunkSize: CS });
  await pool.createVolume("v", CHUNKS * CS);
  await pool.setProtection("v", POLICY);
  let now = Date.UTC(2026, 10, 30, 12, 0, 0);
  /** What each acknowledged point holds, by name. */
  const taken = new Map<string, { atMs: number; content: Buffer }>();
  let volume = Buffer.alloc(CHUNKS * CS);
  let crashes = 0;
  for (let gen = 0; gen < 3; gen++) {
    let interruptedAt: number | undefined;
    // The scheduler reports a volume's failed step instead of throwing (the other volumes go on).
    const scheduler = new PointScheduler({
      pool,
      now: () => now,
      tickMs: 0,
      onError: (_volume, err) => {
        if (!storage.crashed) throw err;
        interruptedAt = now;
      },
    });
    storage.crashAfter(g.int(400));
    for (let step = 0; step < 120 && !storage.crashed; step++) {
      try {
        if (g.int(3) > 0) {
          const chunk = g.int(CHUNKS);
          const data = Buffer.alloc(CS, g.int(255) + 1);
          const h = pool.openVolume("v");
          try {
            await h.write(chunk * CS, data);
          } finally {
            h.close();
          }
          data.copy(volume, chunk * CS);
        }
        now += 1000;
        const before = pool.listPoints("v").map((p) => p.name);
        const report = await scheduler.tick();
        for (const name of report.taken) taken.set(name, { atMs: now, content: Buffer.from(volume) });
        // Deletions are acknowledged only by a tick that was not interrupted.
        if (interruptedAt === undefined) {
          const after = new Set(pool.listPoints("v").map((p) => p.name));
          for (const name of before) if (!after.has(name)) taken.delete(name);
        }
      } catch (err) {
        if (!storage.crashed) throw err;
        interruptedAt = now;
      }
    }
    if (!storage.crashed) storage.crashNow();
    if (interruptedAt !== undefined) stats.interruptedTicks++;
    crashes++;
    storage = new FaultStorage({ seed: seed * 31 + gen, image: storage.image(), survival: 0.5 });
    pool = await Pool.open(options(storage));
    const where = `seed ${seed} generation ${gen}`;
    expect((await pool.check()).problems, where).toEqual([]);
    expect(pool.getVolume("v").protection, where).toBe("1s for 5s, 2s for 20s, 10s for 1m");
    const recovered = pool.listPoints("v");
    const names = new Set(recovered.map((p) => p.name));
    // Points the policy keeps were never up for deletion, even by the interrupted tick.
    const acked = [...taken].map(([name, t]) => ({ name, atMs: t.atMs }));
    for (const p of pointsToKeep(tiers, acked, interruptedAt ?? now))
      expect(names.has(p.name), `${where}: point ${p.name} lost`).toBe(true);
    for (const p of recovered) {
      const t = taken.get(p.name);
      // Only the interrupted tick's own point may exist unacknowledged.
      if (!t) {
        expect(p.createdAt.getTime(), `${where}: unknown point ${p.name}`).toBe(interruptedAt);
        continue;
      }
      const h = pool.openSnapshot(p.name);
      const got = await h.read(0, CHUNKS * CS);
      h.close();
      expect(got.equals(t.content), `${where}: content of ${p.name}`).toBe(true);
      stats.contentsChecked++;
    }
    // Acknowledged points now gone were deleted by the interrupted tick: forget them.
    for (const name of [...taken.keys()]) if (!names.has(name)) taken.delete(name);
    // The volume as it survived (unsynced writes may be lost) is what later points hold.
    const h = pool.openVolume("v");
    volume = Buffer.from(await h.read(0, CHUNKS * CS));
    h.close();
    // An unacknowledged point that survived holds what the volume held then: take it as taken.
    for (const p of recovered) {
      if (taken.has(p.name)) continue;
      const s = pool.openSnapshot(p.name);
      taken.set(p.name, { atMs: p.createdAt.getTime(), content: await s.read(0, CHUNKS * CS) });
      s.close();
    }
  }
  await pool.close();
  return crashes;
}

describe("recovery points under simulated power loss", () => {
  it(`${RUNS} crash runs: nothing kept is lost, nothing untaken appears, contents hold`, async () => {
    let crashes = 0;
    for (let r = 0; r < RUNS; r++) crashes += await crashRun(9100 + r);
    expect(crashes).toBe(RUNS * 3);
    // The runs did what they are for: points were checked, and crashes hit ticks.
    expect(stats.contentsChecked).toBeGreaterThan(RUNS * 3);
    expect(stats.interruptedTicks).toBeGreaterThan(0);
  });
});
