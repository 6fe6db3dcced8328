/**
 * Engine benchmark (`npm run bench:engine`): the engine and the same Node.js file calls on a
 * plain file, side by side, in one run, on one disk; results as ratios. Not a test: it asserts
 * nothing and prints a Markdown report (paste it into BENCHMARKS.md with the machine line).
 *
 * Env: BENCH_DIR (default: a temp dir under os.tmpdir()), BENCH_SIZE_GIB (I/O area, default 1),
 * BENCH_SNAP_GIB (written sizes for snapshot timing, default "1,4,16"), BENCH_SECONDS (per
 * throughput run, default 5), BENCH_SNAPSHOTS (default 1000).
 */
import { execFileSync } from "node:child_process";
import { readSync, writeSync } from "node:fs";
import { mkdtemp, open, rm, writeFile } from "node:fs/promises";
import { cpus, hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { Pool, Prng } from "../pkg/engine/index.js";

const GiB = 1 << 30;
const MiB = 1 << 20;
const env = process.env;
const SIZE = Number(env.BENCH_SIZE_GIB ?? 1) * GiB;
const SNAP_GIB = (env.BENCH_SNAP_GIB ?? "1,4,16").split(",").map(Number);
const SECONDS = Number(env.BENCH_SECONDS ?? 5);
const SNAPSHOTS = Number(env.BENCH_SNAPSHOTS ?? 1000);
const CHUNK = Number(env.BENCH_CHUNK ?? 65536);

const lines: string[] = [];
const say = (s: string): void => {
  lines.push(s);
  console.log(s);
};

/** What both targets offer to the workload: positional I/O plus a flush. */
interface Target {
  write(offset: number, data: Buffer): Promise<void>;
  read(offset: number, length: number): Promise<unknown>;
  flush(): Promise<void>;
}

function dropCaches(): void {
  try {
    execFileSync("sync");
    execFileSync("sh", ["-c", "echo 3 > /proc/sys/vm/drop_caches"]);
  } catch {
    // Not root: caches stay warm for both targets alike.
    return;
  }
}

interface RunResult {
  ops: number;
  seconds: number;
  latenciesUs: number[];
}

/** `depth` concurrent loops issuing `op(i)` for `seconds`, plus a final flush for writes. */
async function run(
  depth: number,
  seconds: number,
  op: (g: Prng) => Promise<unknown>,
  flush?: () => Promise<void>,
): Promise<RunResult> {
  const end = performance.now() + seconds * 1000;
  let ops = 0;
  const latenciesUs: number[] = [];
  const start = performance.now();
  await Promise.all(
    Array.from({ length: depth }, async (_, k) => {
      const g = new Prng(1234 + k);
      while (performance.now() < end) {
        const t0 = performance.now();
        await op(g);
        latenciesUs.push((performance.now() - t0) * 1000);
        ops++;
      }
    }),
  );
  if (flush) await flush();
  return { ops, seconds: (performance.now() - start) / 1000, latenciesUs };
}

function pct(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((s.length * p) / 100))] ?? 0;
}

function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / Math.max(1, values.length);
}

async function throughput(name: string, t: Target): Promise<Record<string, number>> {
  // Every target starts from a clean page cache with no writeback pending: otherwise the target
  // measured second pays for the first one's dirty pages (seen here: 5,000 -> 1,400 MiB/s).
  await t.flush();
  dropCaches();
  const out: Record<string, number> = {};
  const big = Prng.fill(Buffer.alloc(MiB), 7);
  const small = Prng.fill(Buffer.alloc(4096), 8);
  const blocks = SIZE / MiB;
  let seqPos = 0;
  const seqWrite = await run(
    4,
    SECONDS,
    (): Promise<void> => {
      const off = (seqPos++ % blocks) * MiB;
      return t.write(off, big);
    },
    () => t.flush(),
  );
  out.seqwrite_MiBps = seqWrite.ops / seqWrite.seconds;
  dropCaches();
  seqPos = 0;
  const seqRead = await run(4, SECONDS, () => t.read((seqPos++ % blocks) * MiB, MiB));
  out.seqread_MiBps = seqRead.ops / seqRead.seconds;
  const pages = SIZE / 4096;
  for (const qd of [1, 16]) {
    const w = await run(
      qd,
      SECONDS,
      (g) => t.write(g.int(pages) * 4096, small),
      () => t.flush(),
    );
    out[`randwrite_qd${qd}_IOPS`] = w.ops / w.seconds;
    dropCaches();
    const r = await run(qd, SECONDS, (g) => t.read(g.int(pages) * 4096, 4096));
    out[`randread_qd${qd}_IOPS`] = r.ops / r.seconds;
  }
  console.error(`# ${name}: ${JSON.stringify(out)}`);
  return out;
}

async function fill(dev: Target, bytes: number, from = 0): Promise<void> {
  const buf = Prng.fill(Buffer.alloc(4 * MiB), 99);
  const inflight: Promise<void>[] = [];
  for (let off = from; off < from + bytes; off += buf.length) {
    inflight.push(dev.write(off, buf));
    if (inflight.length >= 4) await inflight.shift();
  }
  await Promise.all(inflight);
  await dev.flush();
}

async function timed<T>(fn: () => Promise<T>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function main(): Promise<void> {
  const root = env.BENCH_DIR ?? (await mkdtemp(join(tmpdir(), "snapblock-bench-")));
  const fsType = execFileSync("findmnt", ["-no", "FSTYPE", "-T", root]).toString().trim();
  say(`# snapblock engine benchmark`);
  say("");
  say(
    `Machine: ${hostname()}, ${cpus().length} x ${cpus()[0]?.model ?? "?"}, Node ${process.version}, ` +
      `kernel ${execFileSync("uname", ["-r"]).toString().trim()}, ${fsType} on the bench dir; ` +
      `chunk ${CHUNK / 1024} KiB, I/O area ${SIZE / GiB} GiB, ${SECONDS} s per run, ${new Date().toISOString()}`,
  );
  say("");
  try {
    // ---------------------------------------------------------------- throughput
    const plainPath = join(root, "plain.img");
    await writeFile(plainPath, "");
    const fh = await open(plainPath, "r+");
    const plain: Target = {
      write: async (o, d) => void (await fh.write(d, 0, d.length, o)),
      read: (o, l) => fh.read(Buffer.alloc(l), 0, l, o),
      flush: () => fh.datasync(),
    };
    const pool = await Pool.create({ dir: join(root, "pool"), sizeBytes: SIZE + 40 * GiB, chunkSize: CHUNK });
    await pool.createVolume("bench", SIZE);
    const vol = pool.openVolume("bench");
    // Both fully written first, so the runs measure steady state (in-place writes).
    await fill(plain, SIZE);
    const firstFill = await timed(() => fill(vol, SIZE));
    say(
      `First write of ${SIZE / GiB} GiB into a new thin volume (allocation path): ${(SIZE / MiB / (firstFill / 1000)).toFixed(0)} MiB/s`,
    );
    say("");
    // The same positional calls inline (the engine's default I/O mode) and on the thread pool.
    const plainInline: Target = {
      write: (o, d) => {
        writeSync(fh.fd, d, 0, d.length, o);
        return Promise.resolve();
      },
      read: (o, l) => Promise.resolve(readSync(fh.fd, Buffer.alloc(l), 0, l, o)),
      flush: () => fh.datasync(),
    };
    const p = await throughput("plain file, fs.promises", plain);
    const pi = await throughput("plain file, inline readSync/writeSync", plainInline);
    const e = await throughput("engine", vol);
    say(
      "| workload | plain file, fs.promises | plain file, inline calls | snapblock engine | engine / best plain |",
    );
    say("|---|---:|---:|---:|---:|");
    for (const k of Object.keys(p)) {
      const best = Math.max(p[k]!, pi[k]!);
      say(
        `| ${k} | ${p[k]!.toFixed(0)} | ${pi[k]!.toFixed(0)} | ${e[k]!.toFixed(0)} | ${(e[k]! / best).toFixed(2)}x |`,
      );
    }
    say("");
    await fh.close();
    await rm(plainPath);

    // ---------------------------------------------------------------- first write after snapshot
    const page = Prng.fill(Buffer.alloc(4096), 3);
    const chunks = SIZE / CHUNK;
    const probe = async (label: string): Promise<number[]> => {
      const lat: number[] = [];
      const g = new Prng(label.length);
      const used = new Set<number>();
      for (let i = 0; i < 2000; i++) {
        let c = g.int(chunks);
        while (used.has(c)) c = (c + 1) % chunks;
        used.add(c);
        const t0 = performance.now();
        await vol.write(c * CHUNK + g.int(CHUNK / 4096) * 4096, page);
        lat.push((performance.now() - t0) * 1000);
      }
      await vol.flush();
      return lat;
    };
    const steady = await probe("steady");
    await pool.createSnapshot("bench", "penalty");
    const after = await probe("after-snapshot!");
    say(
      "First write after a snapshot (4 KiB writes into 2,000 distinct chunks, QD1, mean / p50 / p99 in us):",
    );
    say("");
    say("| case | mean | p50 | p99 |");
    say("|---|---:|---:|---:|");
    say(
      `| steady state (chunk owned, in place) | ${mean(steady).toFixed(1)} | ${pct(steady, 50).toFixed(1)} | ${pct(steady, 99).toFixed(1)} |`,
    );
    say(
      `| just after a snapshot (redirect-on-write) | ${mean(after).toFixed(1)} | ${pct(after, 50).toFixed(1)} | ${pct(after, 99).toFixed(1)} |`,
    );
    say(
      `| penalty (mean ratio) | ${(mean(after) / mean(steady)).toFixed(2)}x | ${(pct(after, 50) / pct(steady, 50)).toFixed(2)}x | |`,
    );
    say("");
    await pool.deleteSnapshot("penalty");

    // ---------------------------------------------------------------- snapshot create vs data written
    say(
      "Snapshot create time as the volume's written data grows (10 creates each, ms; each create includes its commit: data fdatasync + journal fdatasync):",
    );
    say("");
    say("| written | p50 | max | metadata in memory | per GiB written |");
    say("|---:|---:|---:|---:|---:|");
    await pool.createVolume("grow", Math.max(...SNAP_GIB) * GiB);
    const grow = pool.openVolume("grow");
    let written = 0;
    for (const gib of SNAP_GIB) {
      await fill(grow, gib * GiB - written, written);
      written = gib * GiB;
      const times: number[] = [];
      for (let i = 0; i < 10; i++) {
        times.push(await timed(() => pool.createSnapshot("grow", `g${gib}-${i}`)));
        await pool.deleteSnapshot(`g${gib}-${i}`);
      }
      const meta = pool.stats().metadataBytes;
      const perGiB = meta / ((written + SIZE) / GiB);
      say(
        `| ${gib} GiB | ${pct(times, 50).toFixed(2)} | ${Math.max(...times).toFixed(2)} | ${(meta / MiB).toFixed(2)} MiB | ${(perGiB / 1024).toFixed(0)} KiB |`,
      );
    }
    say("");

    // ---------------------------------------------------------------- delete a diverged snapshot
    await pool.createSnapshot("grow", "diverged");
    const rewrite = Math.min(written, GiB) * 0.9;
    await fill(grow, rewrite, 0);
    const delMs = await timed(() => pool.deleteSnapshot("diverged"));
    say(
      `Delete of a snapshot whose ${(rewrite / GiB).toFixed(1)} GiB of ${(written / GiB).toFixed(0)} GiB diverged (chunks freed, no data copied): ${delMs.toFixed(1)} ms`,
    );
    say("");
    grow.close();
    await pool.deleteVolume("grow");

    // ---------------------------------------------------------------- many snapshots
    say(
      `${SNAPSHOTS} snapshots of one volume, with 64 random 4 KiB writes between snapshots (create ms, write us):`,
    );
    say("");
    say("| snapshots so far | create p50 | create max | write p50 | write p99 |");
    say("|---:|---:|---:|---:|---:|");
    const g = new Prng(77);
    let creates: number[] = [];
    let writes: number[] = [];
    for (let i = 1; i <= SNAPSHOTS; i++) {
      creates.push(await timed(() => pool.createSnapshot("bench", `many-${i}`)));
      for (let k = 0; k < 64; k++) {
        const t0 = performance.now();
        await vol.write(g.int(SIZE / 4096) * 4096, page);
        writes.push((performance.now() - t0) * 1000);
      }
      if ([1, 10, 100, 250, 500, 1000, SNAPSHOTS].includes(i) && creates.length > 0) {
        say(
          `| ${i} | ${pct(creates, 50).toFixed(2)} | ${Math.max(...creates).toFixed(2)} | ${pct(writes, 50).toFixed(1)} | ${pct(writes, 99).toFixed(1)} |`,
        );
        creates = [];
        writes = [];
      }
    }
    say("");
    const memAll = pool.stats();
    say(
      `After ${SNAPSHOTS} snapshots: metadata in memory ${(memAll.metadataBytes / MiB).toFixed(1)} MiB, pool allocated ${(memAll.allocatedBytes / GiB).toFixed(2)} GiB.`,
    );
    const delAll = await timed(async () => {
      for (let i = 1; i <= SNAPSHOTS; i++) await pool.deleteSnapshot(`many-${i}`);
    });
    say(`Deleting all ${SNAPSHOTS}: ${(delAll / SNAPSHOTS).toFixed(2)} ms each.`);
    vol.close();
    const check = await pool.check();
    say(`Consistency check after the run: ${check.ok ? "clean" : check.problems.join("; ")}.`);
    await pool.close();
  } finally {
    if (!env.BENCH_DIR) await rm(root, { recursive: true, force: true });
  }
  if (env.BENCH_OUT) await writeFile(env.BENCH_OUT, lines.join("\n") + "\n");
}

await main();
