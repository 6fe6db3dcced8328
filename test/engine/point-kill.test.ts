import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { Pool, Prng, parseProtectionPolicy, pointsToKeep } from "../../pkg/engine/index.js";

/**
 * SIGKILL while recovery points are taken and thinned: a child process (point-kill-child.ts) runs
 * the point scheduler on a pool on real files, a point every (policy) second on two volumes under
 * writes, and prints each point once taken; it is killed at a random moment soon after a point,
 * when the next take or the thinning is likely under way. After each kill the pool is reopened:
 * the consistency check is clean, the policies are still set, every point printed (by the
 * scheduler once taken, or seen in the pool's listing, which `snapblock volume points` reads) that
 * the policy would still keep at the moment of the kill is there, and no point appears that was not printed
 * except the one take a kill may interrupt (per volume, newer than every printed one). Every point
 * the child printed as pinned is there and still pinned, however old (pinning is durable, and
 * thinning leaves pinned points). The same pool goes through POINT_KILLS kills (default 6; set
 * more for the long campaign).
 */
const KILLS = Number(process.env.POINT_KILLS ?? 6);
/** Must match point-kill-child.ts. */
const SPEED = 10;
const VOLUMES = ["a", "b"];
const POLICY = "1s for 3s, 2s for 8s, 4s for 20s";
const child = fileURLToPath(new URL("./point-kill-child.ts", import.meta.url));
let dir = "";

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Generation {
  /** Points printed as taken, by name: volume and stamp. */
  taken: Map<string, { volume: string; at: number }>;
  /** Points seen in the pool's listing, by name (a user listing them must find them again). */
  listed: Map<string, { volume: string; at: number }>;
  /** Points printed as pinned (the pin returned), by name. */
  pinned: Map<string, { volume: string; at: number }>;
  thinned: number;
  /** The child's clock when it was killed (an upper bound: read after it died). */
  clockAtKill: number;
}

function runChild(o: {
  poolDir: string;
  seed: number;
  clockStart: number;
  create: boolean;
  /** Kill this long after the child has printed `points` points. */
  points: number;
  delayMs: number;
}): Promise<Generation> {
  return new Promise((resolve, reject) => {
    const args = ["--import", "tsx", child, o.poolDir, String(o.seed), String(o.clockStart), POLICY];
    if (o.create) args.push("create");
    const proc = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
    const gen: Generation = {
      taken: new Map(),
      listed: new Map(),
      pinned: new Map(),
      thinned: 0,
      clockAtKill: 0,
    };
    let start: { realStart: number; clockStart: number } | undefined;
    let stderr = "";
    let killed = false;
    proc.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    createInterface({ input: proc.stdout }).on("line", (line) => {
      const msg = JSON.parse(line) as {
        ready?: boolean;
        realStart?: number;
        clockStart?: number;
        taken?: string;
        volume?: string;
        at?: number;
        deleted?: number;
        reason?: string;
        error?: string;
        listed?: [string, string, number][];
        pinned?: string;
      };
      for (const [name, volume, at] of msg.listed ?? []) gen.listed.set(name, { volume, at });
      if (msg.ready) start = { realStart: msg.realStart!, clockStart: msg.clockStart! };
      if (msg.taken) gen.taken.set(msg.taken, { volume: msg.volume!, at: msg.at! });
      if (msg.pinned) gen.pinned.set(msg.pinned, { volume: msg.volume!, at: msg.at! });
      if (msg.deleted && msg.reason === "thinning") gen.thinned += msg.deleted;
      if (msg.error) reject(new Error(`the child's scheduler failed: ${msg.error}`));
      if (!killed && gen.taken.size >= o.points) {
        killed = true;
        setTimeout(() => proc.kill("SIGKILL"), o.delayMs);
      }
    });
    proc.on("exit", (code, signal) => {
      if (signal !== "SIGKILL" || !killed || !start) {
        reject(new Error(`child exited on its own (code ${code}, signal ${signal}): ${stderr}`));
        return;
      }
      gen.clockAtKill = start.clockStart + (Date.now() - start.realStart) * SPEED;
      resolve(gen);
    });
  });
}

describe("recovery points under SIGKILL", () => {
  it(
    `survive ${KILLS} kills while being taken and thinned`,
    { timeout: 60_000 + KILLS * 15_000 },
    async () => {
      dir = await mkdtemp(join(tmpdir(), "snapblock-point-kill-"));
      const poolDir = join(dir, "pool");
      const tiers = parseProtectionPolicy(POLICY)!.tiers;
      const g = new Prng(1414);
      /** Every point ever printed or found, by name: volume and stamp. */
      const known = new Map<string, { volume: string; at: number }>();
      /** Every point printed as pinned. */
      const pinned = new Map<string, { volume: string; at: number }>();
      let clock = Date.UTC(2026, 11, 1, 6, 0, 0);
      let printed = 0;
      let thinned = 0;
      let interrupted = 0;
      /** Pinned points found at a reopen that the policy alone would have thinned by then. */
      let keptByPin = 0;
      for (let k = 0; k < KILLS; k++) {
        const gen = await runChild({
          poolDir,
          seed: 7000 + k,
          clockStart: clock,
          create: k === 0,
          points: 2 + g.int(12),
          delayMs: g.int(1000 / SPEED),
        });
        printed += gen.taken.size;
        thinned += gen.thinned;
        for (const [name, p] of [...gen.listed, ...gen.taken]) known.set(name, p);
        for (const [name, p] of gen.pinned) pinned.set(name, p);
        const pool = await Pool.open({ dir: poolDir, autoCommitMs: 0 });
        try {
          const where = `kill ${k}`;
          expect((await pool.check()).problems, `${where}: consistency check`).toEqual([]);
          for (const volume of VOLUMES) {
            expect(pool.getVolume(volume).protection, where).toBe(POLICY);
            const recovered = pool
              .listPoints(volume)
              .map((p) => ({ name: p.name, at: p.createdAt.getTime() }));
            const names = new Set(recovered.map((p) => p.name));
            const newestPrinted = Math.max(
              0,
              ...[...known.values()].filter((p) => p.volume === volume).map((p) => p.at),
            );
            // Nothing invented: a point not printed is the take the kill interrupted, newer than
            // every printed point of its volume, and there is at most one.
            const unprinted = recovered.filter((p) => !known.has(p.name));
            expect(unprinted.length, `${where}: unprinted points of ${volume}`).toBeLessThanOrEqual(1);
            for (const p of unprinted) {
              expect(p.at, `${where}: ${p.name} was never printed and is not the last take`).toBeGreaterThan(
                newestPrinted,
              );
              expect(p.at).toBeLessThanOrEqual(gen.clockAtKill);
              interrupted++;
              known.set(p.name, { volume, at: p.at });
            }
            // Nothing lost: every point the policy keeps at the kill, among all the volume's
            // points ever taken (thinning only deletes what it would not keep), is there.
            const all = [...known]
              .filter(([, p]) => p.volume === volume)
              .map(([name, p]) => ({ name, atMs: p.at }));
            for (const p of pointsToKeep(tiers, all, gen.clockAtKill))
              expect(names.has(p.name), `${where}: point ${p.name} of ${volume} lost`).toBe(true);
            // Every pinned point is there, pinned, whatever its age: thinning leaves it, and the
            // pin was durable when the child printed it. (The check above stays true: pinned
            // points take no slot of the policy, so it keeps at least what it kept without them.)
            const policyKeeps = new Set([...pointsToKeep(tiers, all, gen.clockAtKill)].map((p) => p.name));
            for (const [name, p] of pinned) {
              if (p.volume !== volume) continue;
              if (!policyKeeps.has(name)) keptByPin++;
              expect(names.has(name), `${where}: pinned point ${name} of ${volume} lost`).toBe(true);
              expect(pool.getSnapshot(name).pinned, `${where}: ${name} not pinned any more`).toBe(true);
            }
            // Every point is readable.
            for (const p of recovered) {
              const h = pool.openSnapshot(p.name);
              expect((await h.read(0, 4096)).length).toBe(4096);
              h.close();
            }
          }
          clock = gen.clockAtKill + 1;
        } finally {
          await pool.close();
        }
      }
      // The campaign did what it is for: points were taken and thinned across the kills.
      expect(printed).toBeGreaterThan(KILLS * 2);
      expect(thinned).toBeGreaterThan(0);
      expect(keptByPin).toBeGreaterThan(0);
      console.log(
        `point kill campaign: ${KILLS} kills, ${printed} points printed, ${thinned} thinned, ${pinned.size} pinned (found ${keptByPin} times past their policy), ${interrupted} interrupted takes found`,
      );
    },
  );
});
