/**
 * Continuous protection benchmark (`npm run bench:protection`): what a recovery point every
 * second, with thinning, costs a volume under a random-write load (docs/protection.md).
 *
 * Each arm runs in a fresh process (bench/protection-run.ts): a LocalEngine on a pool in a
 * temporary directory (real files, the node's I/O path), one volume filled once, then random
 * 4 KiB writes at a fixed depth for BENCH_PROTECTION_SECONDS. The protected arm sets a policy
 * with short tiers, so the scheduler takes a point every second and thins during the run; the
 * other arm has no policy. Arms alternate (plain, protected, plain, protected, ...) so drift of
 * the machine's load spreads over both. The load goes to the engine, not through the NBD server:
 * the points' cost is all in the engine (the NBD layer adds the same per-write work to both arms
 * and would only add noise), and the writer has to log exactly when each write began and ended
 * to verify restored points.
 *
 * Env: BENCH_PROTECTION_SECONDS (per arm, default 600), BENCH_PROTECTION_ROUNDS (default 3),
 * BENCH_PROTECTION_POLICY (default "1s for 10s, 5s for 20s, 10s for 30s"),
 * BENCH_PROTECTION_VOLUME_MIB (default 2048; the pool is 8 times that), BENCH_PROTECTION_DEPTH (writes in flight, 8),
 * BENCH_PROTECTION_WORKING_SET_MIB (writes go to this much of the volume's start; default all of it),
 * BENCH_PROTECTION_CHUNK_KIB (the pool's chunk size; default the engine's, 64),
 * BENCH_PROTECTION_FLUSH_MS (the writer flushes this often in both arms, like a database's group
 * commit: the plain arm then pays for durability too; default 0, never),
 * BENCH_PROTECTION_STEADY_SECONDS (where the steady part begins; default the policy's longest window + 5 s),
 * BENCH_DIR (where pools go; default a temporary directory).
 * Not a test: it prints Markdown for BENCHMARKS.md.
 */
import { execFileSync, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { compiledBench } from "./compiled.js";
import { loadAverage } from "./process-cpu.js";
import type { RunArgs, RunResult, Sample } from "./protection-run.js";

const env = process.env;
const SECONDS = Number(env.BENCH_PROTECTION_SECONDS ?? 600);
const ROUNDS = Number(env.BENCH_PROTECTION_ROUNDS ?? 3);
const POLICY = env.BENCH_PROTECTION_POLICY ?? "1s for 10s, 5s for 20s, 10s for 30s";
const VOLUME_BYTES = Number(env.BENCH_PROTECTION_VOLUME_MIB ?? 2048) * 2 ** 20;
const DEPTH = Number(env.BENCH_PROTECTION_DEPTH ?? 8);
const WORKING_SET_BYTES = Number(env.BENCH_PROTECTION_WORKING_SET_MIB ?? VOLUME_BYTES / 2 ** 20) * 2 ** 20;
const MiB = 2 ** 20;
const FLUSH_MS = Number(env.BENCH_PROTECTION_FLUSH_MS ?? 0);
const CHUNK_BYTES = env.BENCH_PROTECTION_CHUNK_KIB
  ? Number(env.BENCH_PROTECTION_CHUNK_KIB) * 1024
  : undefined;

/** The longest window of the policy: thinning is in steady state after it. */
function steadyAfterSeconds(policy: string): number {
  const unit: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };
  let longest = 0;
  for (const m of policy.matchAll(/for\s+(\d+)([smhdw])/g))
    longest = Math.max(longest, Number(m[1]) * unit[m[2]!]!);
  return longest;
}

async function runArm(dir: string, policy: string, seed: number): Promise<RunResult> {
  const args: RunArgs = {
    dir,
    seconds: SECONDS,
    policy,
    volumeBytes: VOLUME_BYTES,
    poolBytes: VOLUME_BYTES * 8,
    depth: DEPTH,
    workingSetBytes: WORKING_SET_BYTES,
    seed,
    restores: 3,
    steadyFromSeconds: steadyFrom,
    flushEveryMs: FLUSH_MS,
    ...(CHUNK_BYTES !== undefined ? { chunkBytes: CHUNK_BYTES } : {}),
  };
  const child = spawn(
    process.execPath,
    // The compiled build, as production runs (bench/compiled.ts).
    [join(await compiledBench(join(import.meta.dirname, "..")), "protection-run.js"), JSON.stringify(args)],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("exit", (code) => {
      if (code !== 0) reject(new Error(`arm ${policy || "plain"} exited with ${code}`));
      else resolve(JSON.parse(out.trim().split("\n").pop()!) as RunResult);
    });
  });
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Change of a figure over the steady part of a run: last third's mean vs the first third's. */
function drift(
  samples: Sample[],
  from: number,
  pick: (s: Sample) => number,
): { first: number; last: number } {
  const steady = samples.filter((s) => s.t >= from);
  if (steady.length < 3) return { first: NaN, last: NaN };
  const third = Math.max(1, Math.floor(steady.length / 3));
  const mean = (xs: Sample[]): number => xs.reduce((a, s) => a + pick(s), 0) / xs.length;
  return { first: mean(steady.slice(0, third)), last: mean(steady.slice(-third)) };
}

function disk(dir: string): string {
  try {
    const dev = execFileSync("df", ["--output=source", dir], { encoding: "utf8" }).trim().split("\n").pop()!;
    const name = dev.replace("/dev/", "").replace(/\d+$/, "");
    const rotational = readFileSync(`/sys/block/${name}/queue/rotational`, "utf8").trim();
    return `${dev} (${rotational === "1" ? "rotational" : "non-rotational"})`;
  } catch (err) {
    return `unknown (${(err as Error).message.split("\n")[0]})`;
  }
}

/**
 * Whether the guest hands its free memory back to the host (virtio-balloon free page reporting):
 * then a page the page cache takes for the first time since it was freed is a host fault, and a
 * data file that grows pays for every new page.
 */
function pageReporting(): string {
  try {
    const dir = "/sys/module/page_reporting/parameters";
    const order = readFileSync(`${dir}/page_reporting_order`, "utf8").trim();
    const reported = Number(readFileSync(`${dir}/reported_kib`, "utf8").trim());
    return reported > 0
      ? `on (blocks of order ${order}, ${(reported / 2 ** 20).toFixed(1)} GiB reported so far)`
      : "off";
  } catch {
    return "off";
  }
}

/**
 * Writes/s over the steady part's one-second samples, split by whether the data file grew in
 * that second (more than 1 MiB of blocks written for the first time) or not.
 */
function rateByGrowth(samples: Sample[], from: number, grew: boolean): number {
  let writes = 0;
  let seconds = 0;
  for (let i = 1; i < samples.length; i++) {
    const [a, b] = [samples[i - 1]!, samples[i]!];
    if (a.t < from) continue;
    if (b.fileBytes - a.fileBytes > MiB !== grew) continue;
    writes += b.writes - a.writes;
    seconds += b.t - a.t;
  }
  return seconds > 0 ? writes / seconds : NaN;
}

/** Steady state: thinning has reached its longest window (the data file may still grow: the growth rows show how much). */
const steadyFrom = Number(env.BENCH_PROTECTION_STEADY_SECONDS ?? steadyAfterSeconds(POLICY) + 5);

const root = env.BENCH_DIR ?? (await mkdtemp(join(tmpdir(), "snapblock-protection-bench-")));
const model = cpus()[0]?.model ?? "?";
const diskName = disk(root);
const kernel = readFileSync("/proc/sys/kernel/osrelease", "utf8").trim();
const loadBefore = loadAverage();
const plain: RunResult[] = [];
const protectedRuns: RunResult[] = [];
try {
  for (let round = 0; round < ROUNDS; round++) {
    for (const policy of ["", POLICY]) {
      const dir = await mkdtemp(join(root, policy ? "protected-" : "plain-"));
      try {
        const r = await runArm(dir, policy, 1000 + round);
        (policy ? protectedRuns : plain).push(r);
        console.error(
          `round ${round + 1} ${policy ? "protected" : "plain"}: ${r.writesPerSecond.toFixed(0)} writes/s, p99 ${r.p99Ms.toFixed(2)} ms, ${r.cpuMicrosPerWrite.toFixed(1)} us CPU/write, points ${r.pointsTaken} taken ${r.pointsThinned} thinned`,
        );
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }
  }
} finally {
  if (env.BENCH_DIR === undefined) await rm(root, { recursive: true, force: true });
}
const loadAfter = loadAverage();

const m = (runs: RunResult[], f: (r: RunResult) => number): number => median(runs.map(f));
/** Protected over plain, as a change in % (median of the rounds, then each round). */
const ratio = (f: (r: RunResult) => number): string => {
  // Rounds where either arm has no figure (a split with no seconds in it) are left out.
  const per = plain.map((p, i) => f(protectedRuns[i]!) / f(p)).filter(Number.isFinite);
  if (per.length === 0) return "";
  const pc = (x: number): string => `${x >= 1 ? "+" : ""}${((x - 1) * 100).toFixed(1)} %`;
  return `${pc(median(per))} (rounds: ${per.map(pc).join(", ")})`;
};

console.log(
  `Protection, ${SECONDS} s per arm x ${ROUNDS} rounds interleaved (plain, protected, ...), ${new Date().toISOString()}`,
);
console.log("");
console.log(
  `Machine: ${cpus().length} x ${model}, kernel ${kernel}, disk ${diskName}, Node.js ${process.version}, free page reporting ${pageReporting()}; load average before ${loadBefore.join(" ")}, after ${loadAfter.join(" ")}`,
);
console.log(
  `Load: random 4 KiB writes, ${DEPTH} in flight, ${FLUSH_MS > 0 ? `a flush every ${FLUSH_MS} ms, ` : ""}over ${WORKING_SET_BYTES / MiB} MiB of a ${VOLUME_BYTES / MiB} MiB volume filled first, ${CHUNK_BYTES !== undefined ? `${CHUNK_BYTES / 1024} KiB` : "default"} chunks; policy "${POLICY}" (its longest window ${steadyAfterSeconds(POLICY)} s; the steady part is the load after ${steadyFrom} s)`,
);
console.log("");
console.log(
  "| figure | plain (median) | protected (median) | protected vs plain (median of per-round ratios) |",
);
console.log("|---|---:|---:|---|");
console.log(
  `| writes/s | ${m(plain, (r) => r.writesPerSecond).toFixed(0)} | ${m(protectedRuns, (r) => r.writesPerSecond).toFixed(0)} | ${ratio((r) => r.writesPerSecond)} |`,
);
console.log(
  `| write p50 | ${m(plain, (r) => r.p50Ms).toFixed(3)} ms | ${m(protectedRuns, (r) => r.p50Ms).toFixed(3)} ms | ${ratio((r) => r.p50Ms)} |`,
);
console.log(
  `| write p99 | ${m(plain, (r) => r.p99Ms).toFixed(3)} ms | ${m(protectedRuns, (r) => r.p99Ms).toFixed(3)} ms | ${ratio((r) => r.p99Ms)} |`,
);
console.log(
  `| write p99.9 | ${m(plain, (r) => r.p999Ms).toFixed(3)} ms | ${m(protectedRuns, (r) => r.p999Ms).toFixed(3)} ms | ${ratio((r) => r.p999Ms)} |`,
);
console.log(
  `| longest write | ${m(plain, (r) => r.maxMs).toFixed(1)} ms | ${m(protectedRuns, (r) => r.maxMs).toFixed(1)} ms | ${ratio((r) => r.maxMs)} |`,
);
console.log(
  `| CPU per write | ${m(plain, (r) => r.cpuMicrosPerWrite).toFixed(1)} us | ${m(protectedRuns, (r) => r.cpuMicrosPerWrite).toFixed(1)} us | ${ratio((r) => r.cpuMicrosPerWrite)} |`,
);
const steadyRow = (
  label: string,
  f: (s: NonNullable<RunResult["steady"]>) => number,
  fmt: (x: number) => string,
): void => {
  if (![...plain, ...protectedRuns].every((r) => r.steady !== undefined)) return;
  const g = (r: RunResult): number => f(r.steady!);
  console.log(`| ${label}, steady part | ${fmt(m(plain, g))} | ${fmt(m(protectedRuns, g))} | ${ratio(g)} |`);
};
steadyRow(
  "writes/s",
  (s) => s.writesPerSecond,
  (x) => x.toFixed(0),
);
steadyRow(
  "write p99",
  (s) => s.p99Ms,
  (x) => `${x.toFixed(3)} ms`,
);
steadyRow(
  "CPU per write",
  (s) => s.cpuMicrosPerWrite,
  (x) => `${x.toFixed(1)} us`,
);
const growthRow = (label: string, grew: boolean): void => {
  const g = (r: RunResult): number => rateByGrowth(r.samples, steadyFrom, grew);
  const fmt = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : "-");
  console.log(`| ${label} | ${fmt(m(plain, g))} | ${fmt(m(protectedRuns, g))} | ${ratio(g)} |`);
};
growthRow("writes/s, steady seconds in which the data file did not grow", false);
growthRow("writes/s, steady seconds in which it grew (new page-cache pages)", true);
const growth = (r: RunResult): number => {
  const steady = r.samples.filter((s) => s.t >= steadyFrom);
  if (steady.length < 2) return NaN;
  const [a, b] = [steady[0]!, steady[steady.length - 1]!];
  return (b.fileBytes - a.fileBytes) / MiB / (b.t - a.t);
};
console.log(
  `| data file growth, steady part | ${plain.map((r) => `${growth(r).toFixed(1)} MiB/s`).join("; ")} | ${protectedRuns.map((r) => `${growth(r).toFixed(1)} MiB/s`).join("; ")} | |`,
);
console.log(
  `| commits (data + journal sync): count, mean, longest | ${plain.map((r) => `${r.commits.count}, ${r.commits.meanMs.toFixed(1)} ms, ${r.commits.maxMs.toFixed(0)} ms`).join("; ")} | ${protectedRuns.map((r) => `${r.commits.count}, ${r.commits.meanMs.toFixed(1)} ms, ${r.commits.maxMs.toFixed(0)} ms`).join("; ")} | |`,
);
const metaDrift = (r: RunResult) => drift(r.samples, steadyFrom, (s) => s.metadataBytes);
const rssDrift = (r: RunResult) => drift(r.samples, steadyFrom, (s) => s.rssBytes);
const pointsDrift = (r: RunResult) => drift(r.samples, steadyFrom, (s) => s.points);
const allocDrift = (r: RunResult) => drift(r.samples, steadyFrom, (s) => s.allocatedBytes);
const show = (d: { first: number; last: number }, div: number, unit: string): string =>
  `${(d.first / div).toFixed(1)} -> ${(d.last / div).toFixed(1)}${unit}`;
console.log(
  `| engine metadata, steady part: first third -> last third | ${plain.map((r) => show(metaDrift(r), MiB, " MiB")).join("; ")} | ${protectedRuns.map((r) => show(metaDrift(r), MiB, " MiB")).join("; ")} | |`,
);
console.log(
  `| RSS, steady part: first third -> last third | ${plain.map((r) => show(rssDrift(r), MiB, " MiB")).join("; ")} | ${protectedRuns.map((r) => show(rssDrift(r), MiB, " MiB")).join("; ")} | |`,
);
console.log(
  `| pool allocated, steady part: first third -> last third | ${plain.map((r) => show(allocDrift(r), MiB, " MiB")).join("; ")} | ${protectedRuns.map((r) => show(allocDrift(r), MiB, " MiB")).join("; ")} | |`,
);
console.log(
  `| points held, steady part | | ${protectedRuns.map((r) => show(pointsDrift(r), 1, "")).join("; ")} | |`,
);
console.log("");
console.log(
  "| protected round | points taken | thinned | dropped for space | held at end | held by points only | pool allocated (plain arm) | restores: ms (point age), blocks checked, mismatches |",
);
console.log("|---|---:|---:|---:|---:|---:|---:|---|");
protectedRuns.forEach((r, i) => {
  const restores = r.restores
    .map((c) => `${c.restoreMs.toFixed(1)} ms (${c.ageSeconds} s old), ${c.blocksChecked}, ${c.mismatches}`)
    .join("; ");
  console.log(
    `| ${i + 1} | ${r.pointsTaken} | ${r.pointsThinned} | ${r.pointsDroppedForSpace} | ${r.pointsAtEnd} | ${(r.heldBytes / MiB).toFixed(0)} MiB | ${(r.allocatedBytes / MiB).toFixed(0)} MiB (${(plain[i]!.allocatedBytes / MiB).toFixed(0)} MiB) | ${restores} |`,
  );
});
const bad = protectedRuns.flatMap((r) => r.restores).filter((c) => c.mismatches > 0);
if (bad.length > 0) {
  console.error(`restored points with wrong content: ${bad.map((c) => c.point).join(", ")}`);
  process.exitCode = 1;
}
