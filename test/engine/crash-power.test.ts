import { describe, expect, it } from "vitest";
import { FaultStorage, Pool, Prng, type PoolOptions } from "../../pkg/engine/index.js";
import { Model, isDurabilityPoint, modelFromPool, runOp, verifyRecovered } from "./reference-model.js";

/**
 * Power-loss crash test: random operations with flushes run on a fault-injecting storage that
 * loses power at a random I/O instant (unsynced writes survive or not, torn at sector
 * boundaries; unsynced directory operations survive as a prefix). The pool is reopened from what
 * survived and compared with what was acknowledged; the consistency check must be clean. Each run
 * chains several crashes on the same pool. CRASH_POINTS sets how many crashes in total (the CI
 * default is 240; set thousands for the long mode).
 */
const CRASH_POINTS = Number(process.env.CRASH_POINTS ?? 240);
const GENERATIONS = 4;

async function crashRun(seed: number): Promise<number> {
  const g = new Prng(seed);
  const chunkSize = g.pick([8192, 16384]);
  const options = (storage: FaultStorage): PoolOptions => ({
    storage,
    autoCommitMs: 0,
    checkpointBytes: g.pick([2048, 16384, 1 << 20]),
  });
  let storage = new FaultStorage({ seed, survival: g.pick([0.2, 0.5, 0.8]) });
  let pool = await Pool.create({ ...options(storage), sizeBytes: 2048 * chunkSize, chunkSize });
  let model = new Model();
  const limits = { maxVolumes: 4, maxSnapshots: 5, maxSize: 12 * chunkSize };
  let crashes = 0;
  for (let gen = 0; gen < GENERATIONS; gen++) {
    let states = [model.clone()];
    storage.crashAfter(g.int(600));
    for (let i = 0; i < 150 && !storage.crashed; i++) {
      const op = model.nextOp(g, chunkSize, limits);
      const next = model.clone();
      next.apply(op);
      let got: Buffer | undefined;
      try {
        got = await runOp(pool, op);
      } catch (err) {
        if (!storage.crashed) throw err;
        states.push(next); // the interrupted op may or may not have taken effect
        break;
      }
      if (op.t === "read") {
        const src = (op.kind === "volume" ? model.volumes : model.snapshots).get(op.dev)!;
        expect(
          got!.equals(src.subarray(op.off, op.off + op.len)),
          `seed ${seed}: read before the crash`,
        ).toBe(true);
      }
      model = next;
      if (isDurabilityPoint(op)) states = [model.clone()];
      else states.push(model.clone());
    }
    if (!storage.crashed) storage.crashNow();
    crashes++;
    storage = new FaultStorage({
      seed: seed * 31 + gen,
      image: storage.image(),
      survival: g.pick([0.2, 0.5, 0.8]),
    });
    pool = await Pool.open(options(storage));
    const problems = await verifyRecovered(pool, states);
    expect(problems, `seed ${seed} generation ${gen}`).toEqual([]);
    const report = await pool.check();
    expect(report.problems, `seed ${seed} generation ${gen}: consistency check`).toEqual([]);
    const counter = model.counter;
    model = await modelFromPool(pool);
    model.counter = counter;
  }
  await pool.close();
  return crashes;
}

describe("crash safety under simulated power loss", () => {
  const runs = Math.ceil(CRASH_POINTS / GENERATIONS);
  const perTest = 10;
  for (let t = 0; t < Math.ceil(runs / perTest); t++) {
    it(`crash runs ${t * perTest + 1}-${Math.min(runs, (t + 1) * perTest)}`, async () => {
      let crashes = 0;
      for (let r = t * perTest; r < Math.min(runs, (t + 1) * perTest); r++)
        crashes += await crashRun(7000 + r);
      expect(crashes).toBeGreaterThan(0);
    });
  }
});
