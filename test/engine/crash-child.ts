/**
 * Child process of the SIGKILL crash test: opens (or creates) a pool on real files and runs
 * random operations forever, printing each op as a JSON line before it starts and an ack line
 * after it completes (stdout to a pipe is synchronous on Linux, so a printed ack was given
 * before any kill). Usage: crash-child.ts <pool-dir> <seed> <name-counter> [create]
 */
import { Pool, Prng } from "../../pkg/engine/index.js";
import { modelFromPool, runOp } from "./reference-model.js";

const [dir, seedArg, counterArg, create] = process.argv.slice(2);
const seed = Number(seedArg);
const chunkSize = 16384;
const pool =
  create === "create"
    ? await Pool.create({
        dir: dir!,
        sizeBytes: 4096 * chunkSize,
        chunkSize,
        autoCommitMs: 15,
        checkpointBytes: 32768,
      })
    : await Pool.open({ dir: dir!, autoCommitMs: 15, checkpointBytes: 32768 });
const model = await modelFromPool(pool);
model.counter = Number(counterArg);
const g = new Prng(seed);
const limits = { maxVolumes: 4, maxSnapshots: 5, maxSize: 16 * chunkSize };
process.stdout.write(JSON.stringify({ ready: true }) + "\n");
for (let i = 0; ; i++) {
  const op = model.nextOp(g, chunkSize, limits);
  process.stdout.write(JSON.stringify({ op }) + "\n");
  const got = await runOp(pool, op);
  if (op.t === "read") {
    const src = (op.kind === "volume" ? model.volumes : model.snapshots).get(op.dev)!;
    if (!got!.equals(src.subarray(op.off, op.off + op.len))) {
      process.stdout.write(JSON.stringify({ mismatch: op }) + "\n");
      process.exit(1);
    }
  }
  model.apply(op);
  process.stdout.write(JSON.stringify({ ack: i }) + "\n");
}
