import { describe, expect, it } from "vitest";
import { FaultStorage, Pool, Prng, type PoolOptions } from "../../pkg/engine/index.js";

/**
 * Power loss at every I/O instant of snapshots taken with their CSI metadata (annotations), of a
 * metadata change, of a group snapshot and of a delete and re-create under the same name, with
 * unsynced writes of the volumes dirty in between. A snapshot and its metadata are one journal
 * commit, so after the crash the pool holds exactly the state after the last acknowledged
 * operation or after the interrupted one, for every name at once: never a snapshot without its
 * metadata, never metadata of another incarnation, never half a group.
 */
const CS = 4096;
type State = Map<string, Record<string, string> | undefined>;

interface Step {
  run(pool: Pool): Promise<unknown>;
  /** The snapshots' metadata after the step. */
  after(s: State): void;
}

const A1 = { "csi.name": "snapshot-1", "csi.source": "pvc-1" };
const A2 = { "csi.name": "snapshot-1", "csi.source": "pvc-1", "snapblock.dev/pull-grants": "node-b" };
const A3 = { "csi.name": "snapshot-1 again" };
const G1 = { "csi.name": "group-member-v", group: "g" };
const G2 = { "csi.name": "group-member-w", group: "g" };

const steps: Step[] = [
  { run: (p) => p.createSnapshot("v", "s1", { annotations: A1 }), after: (s) => s.set("s1", A1) },
  { run: (p) => p.annotate("snapshot", "s1", A2), after: (s) => s.set("s1", A2) },
  {
    run: (p) =>
      p.createSnapshots([
        { volume: "v", snapshot: "g-v", annotations: G1 },
        { volume: "w", snapshot: "g-w", annotations: G2 },
      ]),
    after: (s) => {
      s.set("g-v", G1);
      s.set("g-w", G2);
    },
  },
  { run: (p) => p.deleteSnapshot("s1"), after: (s) => s.delete("s1") },
  { run: (p) => p.createSnapshot("w", "s1", { annotations: A3 }), after: (s) => s.set("s1", A3) },
];

async function dirty(pool: Pool, g: Prng): Promise<void> {
  for (const vol of ["v", "w"]) {
    const h = pool.openVolume(vol);
    try {
      await h.write(g.int(16) * CS + g.int(CS - 512), Prng.fill(Buffer.alloc(512), g.nextU32()));
    } finally {
      h.close();
    }
  }
}

function recovered(pool: Pool): string {
  const out: [string, Record<string, string>][] = pool
    .listSnapshots()
    .map((s) => [s.name, pool.annotations("snapshot", s.name)]);
  return JSON.stringify(out.sort(([a], [b]) => (a < b ? -1 : 1)));
}

function expected(s: State): string {
  return JSON.stringify([...s].filter(([, m]) => m !== undefined).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/** Runs every step with a crash armed at I/O `crashAt`; returns whether the crash hit a step. */
async function crashRun(crashAt: number, seed: number, checkpointBytes: number): Promise<boolean> {
  const g = new Prng(seed);
  const options = (storage: FaultStorage): PoolOptions => ({ storage, autoCommitMs: 0, checkpointBytes });
  let storage = new FaultStorage({ seed, survival: g.pick([0.2, 0.5, 0.8]) });
  let pool = await Pool.create({ ...options(storage), sizeBytes: 256 * CS, chunkSize: CS });
  await pool.createVolume("v", 16 * CS, { annotations: { "csi.name": "pvc-1" } });
  await pool.createVolume("w", 16 * CS, { annotations: { "csi.name": "pvc-2" } });
  const state: State = new Map();
  let acked = expected(state);
  let interrupted: string | undefined;
  storage.crashAfter(crashAt);
  for (const step of steps) {
    let started = false;
    try {
      await dirty(pool, g);
      started = true;
      await step.run(pool);
    } catch (err) {
      if (!storage.crashed) throw err;
      if (started) {
        step.after(state);
        interrupted = expected(state);
      }
      break;
    }
    step.after(state);
    acked = expected(state);
  }
  const hit = storage.crashed;
  if (!storage.crashed) storage.crashNow();
  storage = new FaultStorage({ seed: seed + 1, image: storage.image(), survival: 0.5 });
  pool = await Pool.open(options(storage));
  const where = `crash at I/O ${crashAt}, seed ${seed}`;
  expect([acked, interrupted], where).toContain(recovered(pool));
  expect(pool.annotations("volume", "v"), where).toEqual({ "csi.name": "pvc-1" });
  expect((await pool.check()).problems, where).toEqual([]);
  await pool.close();
  return hit;
}

describe("snapshots and their metadata under power loss", () => {
  it("hold both or neither at every I/O instant", async () => {
    let hits = 0;
    let crashAt = 0;
    // Sweeps the crash point through every I/O of the steps (until a run finishes uncrashed),
    // once with checkpoints in the window and once without.
    for (const checkpointBytes of [512, 1 << 20]) {
      for (crashAt = 0; crashAt < 500; crashAt++) {
        if (!(await crashRun(crashAt, 500 + crashAt, checkpointBytes))) break;
        hits++;
      }
      expect(crashAt).toBeLessThan(500);
    }
    // Each step was hit at least at its commit (data sync, journal write, journal sync).
    expect(hits).toBeGreaterThan(steps.length * 3);
  });
});
