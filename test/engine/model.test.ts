import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { FaultStorage, Pool, Prng, type DataIo, type PoolOptions } from "../../pkg/engine/index.js";
import { Model, modelFromPool, runOp } from "./reference-model.js";

/**
 * Model-based test: long random sequences of aligned and unaligned writes, reads, trims, zeroes,
 * snapshots, restores, clones (shared and fully copied), deletes in any order, resizes and
 * reopens, checked step by step against a plain in-memory model, with the full consistency check
 * after each sequence.
 */
const SEQUENCES = Number(process.env.MODEL_SEQUENCES ?? 24);
const OPS = Number(process.env.MODEL_OPS ?? 400);

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function runSequence(seed: number, onDisk: boolean, dataIo: DataIo = "buffered"): Promise<void> {
  const g = new Prng(seed);
  const chunkSize = g.pick([4096, 16384, 65536]);
  const base: PoolOptions = { autoCommitMs: 0, checkpointBytes: g.pick([4096, 65536, 1 << 20]) };
  if (onDisk) {
    const dir = await mkdtemp(join(tmpdir(), "snapblock-model-"));
    dirs.push(dir);
    base.dir = join(dir, "pool");
    base.dataIo = dataIo;
  } else {
    base.storage = new FaultStorage({ seed });
  }
  let pool = await Pool.create({ ...base, sizeBytes: 256 * chunkSize + 12345, chunkSize });
  const model = new Model();
  const limits = { maxVolumes: 5, maxSnapshots: 6, maxSize: 8 * chunkSize };
  try {
    for (let i = 0; i < OPS; i++) {
      if (g.chance(0.02)) {
        await pool.close();
        pool = await Pool.open(base);
      }
      const op = model.nextOp(g, chunkSize, limits);
      const expected = model.clone();
      expected.apply(op);
      const got = await runOp(pool, op);
      if (op.t === "read") {
        const src = (op.kind === "volume" ? model.volumes : model.snapshots).get(op.dev)!;
        const want = src.subarray(op.off, op.off + op.len);
        if (!got!.equals(want)) {
          throw new Error(`seed ${seed} op ${i}: read ${JSON.stringify(op)} differs from the model`);
        }
      }
      Object.assign(model, expected);
      if (g.chance(0.05)) {
        const report = await pool.check();
        expect(report.problems, `seed ${seed} after op ${i}`).toEqual([]);
      }
    }
    for (const v of pool.listVolumes()) await pool.waitForCopy(v.name);
    const actual = await modelFromPool(pool);
    expect([...actual.volumes.keys()].sort()).toEqual([...model.volumes.keys()].sort());
    expect([...actual.snapshots.keys()].sort()).toEqual([...model.snapshots.keys()].sort());
    for (const [name, content] of model.volumes)
      expect(actual.volumes.get(name)!.equals(content), name).toBe(true);
    for (const [name, content] of model.snapshots)
      expect(actual.snapshots.get(name)!.equals(content), name).toBe(true);
    const report = await pool.check();
    expect(report.problems, `seed ${seed}`).toEqual([]);
    expect(report.ok).toBe(true);
    // Deleting everything in a random order gives every chunk back.
    const all = [
      ...pool.listVolumes().map((v) => ({ kind: "volume" as const, name: v.name })),
      ...pool.listSnapshots().map((s) => ({ kind: "snapshot" as const, name: s.name })),
    ];
    while (all.length > 0) {
      const [d] = all.splice(g.int(all.length), 1);
      if (d!.kind === "volume") await pool.deleteVolume(d!.name);
      else await pool.deleteSnapshot(d!.name);
    }
    const empty = await pool.check();
    expect(empty.problems).toEqual([]);
    expect(empty.chunksInUse).toBe(0);
    expect(pool.stats().allocatedBytes).toBe(0);
  } finally {
    await pool.close();
  }
}

describe("engine against a reference model", () => {
  for (let s = 1; s <= SEQUENCES; s++) {
    const onDisk = s % 4 === 0;
    // Every other on-disk sequence opens the data file O_DIRECT (unaligned writes included).
    const dataIo: DataIo = s % 8 === 0 ? "direct" : "buffered";
    const where = onDisk ? `real files, ${dataIo} data` : "in-memory storage";
    it(`sequence ${s} (${where})`, async () => {
      await runSequence(1000 + s, onDisk, dataIo);
    });
  }
});
