import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { Pool, Prng } from "../../pkg/engine/index.js";
import { Model, isDurabilityPoint, modelFromPool, verifyRecovered, type Op } from "./reference-model.js";

/**
 * SIGKILL crash test: a child process runs random operations with flushes on a pool on real
 * files and is killed with SIGKILL at a random moment; the parent reopens the pool (recovery),
 * checks it against the operations the child acknowledged and runs the consistency check. The
 * same pool goes through CRASH_KILLS kills in a row.
 */
const KILLS = Number(process.env.CRASH_KILLS ?? 24);
const child = fileURLToPath(new URL("./crash-child.ts", import.meta.url));
let dir = "";

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Generation {
  ops: Op[];
  acked: number;
}

/** Runs the child until it has acknowledged `acks` operations (or a little later), then kills it. */
function runChild(
  poolDir: string,
  seed: number,
  counter: number,
  create: boolean,
  acks: number,
  delayMs: number,
): Promise<Generation> {
  return new Promise((resolve, reject) => {
    const args = ["--import", "tsx", child, poolDir, String(seed), String(counter)];
    if (create) args.push("create");
    const proc = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
    const gen: Generation = { ops: [], acked: 0 };
    let stderr = "";
    let killed = false;
    proc.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const kill = (): void => {
      if (killed) return;
      killed = true;
      proc.kill("SIGKILL");
    };
    createInterface({ input: proc.stdout }).on("line", (line) => {
      const msg = JSON.parse(line) as { op?: Op; ack?: number; mismatch?: Op };
      if (msg.op) gen.ops.push(msg.op);
      if (msg.ack !== undefined) gen.acked = msg.ack + 1;
      if (msg.mismatch)
        reject(new Error(`child read differs from its model: ${JSON.stringify(msg.mismatch)}`));
      if (gen.acked >= acks) setTimeout(kill, delayMs);
    });
    proc.on("exit", (code, signal) => {
      if (signal === "SIGKILL" && killed) resolve(gen);
      else reject(new Error(`child exited on its own (code ${code}, signal ${signal}): ${stderr}`));
    });
  });
}

describe("crash safety under SIGKILL", () => {
  it(`survives ${KILLS} kills at random moments`, async () => {
    dir = await mkdtemp(join(tmpdir(), "snapblock-kill-"));
    const poolDir = join(dir, "pool");
    const g = new Prng(424242);
    let model = new Model();
    for (let k = 0; k < KILLS; k++) {
      const gen = await runChild(poolDir, 9000 + k, model.counter, k === 0, 5 + g.int(150), g.int(5));
      // States since the last acknowledged durability point, then the op in flight, if any.
      let states = [model.clone()];
      let m = model.clone();
      gen.ops.forEach((op, i) => {
        m = m.clone();
        m.apply(op);
        if (i < gen.acked && isDurabilityPoint(op)) states = [m.clone()];
        else states.push(m.clone());
      });
      const pool = await Pool.open({ dir: poolDir, autoCommitMs: 0, resumeCopies: false });
      try {
        const problems = await verifyRecovered(pool, states);
        expect(problems, `kill ${k}`).toEqual([]);
        const report = await pool.check();
        expect(report.problems, `kill ${k}: consistency check`).toEqual([]);
        const counter = m.counter + gen.ops.length + 1;
        model = await modelFromPool(pool);
        model.counter = counter;
      } finally {
        await pool.close();
      }
    }
  });
});
