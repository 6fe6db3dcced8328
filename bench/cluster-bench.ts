/**
 * Cluster benchmark (`npm run bench:cluster`): snapshots beyond one node, with real node processes
 * and a controller over mutual TLS on loopback (the processes test/cluster/replication.test.ts
 * starts). One source volume on node-a holds BENCH_ALLOCATED_MIB of data in 1 MiB runs with a
 * 1 MiB hole after each (so the volume is twice that size). Each round, interleaved:
 *
 * - ceiling: bench/tls-copy.ts copies the same number of bytes between two Node.js processes
 *   over mutual TLS 1.3 with the nodes' certificates, in chunk-sized messages;
 * - pull: the snapshot restored onto node-b; MiB/s of its background pull (the node's own
 *   "pull finished" figures) and the CPU seconds of the pulling and the serving node processes
 *   (user + system from /proc/<pid>/stat) per GiB;
 * - disk: the same bytes written to a file on the pools' filesystem in chunk-sized writes with an
 *   fdatasync every 256 chunks, as the pull commits (the disk's share of the pull's work);
 * - plain copy: the ceiling's copy with the receiver writing what arrives to a file on the
 *   pools' filesystem as the disk reference does (chunk-sized writes, an fdatasync every 256 and
 *   at the end): a copy of the same bytes over the same link that lands them on the other side's
 *   disk, what a pull does without the engine;
 *   the four rotate in order from round to round;
 * - first read: the snapshot restored onto node-c, staged (nbdfuse + loop) and the last allocated
 *   chunk read from the block device (the background pull goes in chunk order: that chunk is the
 *   last it would copy); then chunks not copied yet read over the volume's NBD export (on-demand
 *   fetches), and the same chunks again (now local). node-c's background pull is rate-limited so
 *   that the uncopied chunks stay uncopied while they are measured; on-demand fetches are not
 *   limited. Every chunk read is compared with the data written;
 * - incremental replica: 1% of the allocated chunks of the source rewritten, a snapshot with
 *   snapblock.dev/replicas=1, and the bytes its replica on node-b received (after one full replica
 *   made before the rounds).
 *
 * Prints markdown tables (per round and medians); BENCH_JSON=FILE also writes the figures as JSON.
 * Env: BENCH_ALLOCATED_MIB (1024), BENCH_ROUNDS (3), BENCH_LATENCY_READS (100),
 * BENCH_LATENCY_PULL_LIMIT (node-c's --pull-rate-limit, 4M), BENCH_DIR (kept if given),
 * BENCH_CPU_PROF (a directory: the node processes write V8 CPU profiles there), BENCH_NODE_ARGS
 * (more arguments for every node process, e.g. "--data-io direct").
 */
import {
  closeSync,
  fsyncSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { cpus, release, tmpdir, totalmem } from "node:os";
import path from "node:path";
import { rankByRendezvous } from "../pkg/cluster/index.js";
import { Prng } from "../pkg/engine/index.js";
import type { SnapblockProcess } from "../test/cluster/cluster-processes.js";
import { RawNbdClient } from "../test/nbd/raw-client.js";
import { ClusterUnderTest } from "./cluster-under-test.js";
import { cpuSeconds, loadAverage } from "./process-cpu.js";
import { runDiskWrite, type DiskWriteResult } from "./disk-write-ceiling.js";
import { runTlsCopy, type TlsCopyResult } from "./tls-copy-ceiling.js";

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const CHUNK = 64 * 1024;
const RUN = MiB;
const ALLOCATED_MIB = Number(process.env.BENCH_ALLOCATED_MIB ?? 1024);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const LATENCY_READS = Number(process.env.BENCH_LATENCY_READS ?? 100);
const LATENCY_PULL_LIMIT = process.env.BENCH_LATENCY_PULL_LIMIT ?? "4M";
const VOLUME_BYTES = 2 * ALLOCATED_MIB * MiB;
const ALLOCATED_BYTES = ALLOCATED_MIB * MiB;
if (!(ALLOCATED_MIB >= 16 && Number.isInteger(ALLOCATED_MIB)))
  throw new Error("BENCH_ALLOCATED_MIB: a whole number >= 16");
if (!(ROUNDS >= 1 && Number.isInteger(ROUNDS))) throw new Error("BENCH_ROUNDS: a whole number >= 1");

/** Allocated chunks of the source volume: the first MiB of every 2 MiB. */
const allocated: number[] = [];
for (let c = 0; c < VOLUME_BYTES / CHUNK; c++) if ((c * CHUNK) % (2 * RUN) < RUN) allocated.push(c);

let runCache: { run: number; data: Buffer } | undefined;
/** The content of run `run` as first written (seeded, so it can be checked without keeping it). */
function runData(run: number): Buffer {
  if (runCache?.run !== run) runCache = { run, data: Prng.fill(Buffer.alloc(RUN), run + 1) };
  return runCache.data;
}
/** What chunk `c` of the snapshot reads as. */
function snapshotChunk(c: number): Buffer {
  const offset = c * CHUNK;
  const within = offset % (2 * RUN);
  if (within >= RUN) return Buffer.alloc(CHUNK);
  return runData(Math.floor(offset / (2 * RUN))).subarray(within, within + CHUNK);
}

const median = (v: number[]): number => {
  const s = [...v].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length === 0 ? NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const pct = (v: number[], p: number): number => {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((s.length * p) / 100))] ?? NaN;
};
const f = (n: number, digits = 1): string => (Number.isFinite(n) ? n.toFixed(digits) : "-");

interface LogLine {
  msg?: string;
  origin?: string;
  bytes?: number;
  seconds?: number;
  chunks?: number;
  incremental?: boolean;
}

/** Waits for a log line of `proc` (after line `from`) that `match` accepts. */
async function logLine(
  proc: SnapblockProcess,
  from: number,
  match: (l: LogLine) => boolean,
  what: string,
  timeoutMs = 600_000,
): Promise<LogLine> {
  const end = Date.now() + timeoutMs;
  let i = from;
  for (;;) {
    for (; i < proc.log.length; i++) {
      const text = proc.log[i]!;
      if (!text.startsWith("{")) continue;
      const line = JSON.parse(text) as LogLine;
      if (match(line)) return line;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}\n${proc.log.slice(-20).join("\n")}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function writeChunks(device: string, writes: { offset: number; data: Buffer }[]): void {
  const fd = openSync(device, "r+");
  try {
    for (const w of writes) writeSync(fd, w.data, 0, w.data.length, w.offset);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function readDevice(device: string, offset: number, length: number): Buffer {
  const fd = openSync(device, "r");
  try {
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const n = readSync(fd, buf, done, length - done, offset + done);
      if (n === 0) throw new Error(`${device} ended at ${offset + done}`);
      done += n;
    }
    return buf;
  } finally {
    closeSync(fd);
  }
}

function machine(): string {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? cpus()[0]?.model ?? "?";
  return `${cpus().length} x ${model}, ${(totalmem() / GiB).toFixed(1)} GiB RAM, kernel ${release()}, Node ${process.version}`;
}

interface PullRound {
  round: number;
  order: string;
  tls: TlsCopyResult;
  tlsMiBps: number;
  disk: DiskWriteResult;
  diskMiBps: number;
  copy: TlsCopyResult;
  copyMiBps: number;
  pullBytes: number;
  pullSeconds: number;
  pullMiBps: number;
  restoreToDoneSeconds: number;
  pullingCpu: number;
  servingCpu: number;
  load1: number;
}
interface ReadRound {
  round: number;
  createMs: number;
  stageMs: number;
  firstReadMs: number;
  restoreToFirstReadMs: number;
  uncopiedMs: number[];
  copiedMs: number[];
  backgroundBytesAtEnd: number;
  allocatedBelowPicks: number;
  uncopiedVerified: boolean;
}
interface ReplicaRound {
  snapshot: string;
  changedChunks: number;
  changedBytes: number;
  sentBytes: number;
  incremental: boolean;
  pullSeconds: number;
  snapshotToReplicaSeconds: number;
}

const keepDir = process.env.BENCH_DIR !== undefined;
const dir = process.env.BENCH_DIR ?? mkdtempSync(path.join(tmpdir(), "snapblock-cluster-bench-"));
const profDir = process.env.BENCH_CPU_PROF;
/** More arguments for every node process, e.g. "--data-io direct" (split at spaces). */
const nodeArgs = (process.env.BENCH_NODE_ARGS ?? "").split(" ").filter((a) => a !== "");
const started = new Date();
const loadAtStart = loadAverage();
console.log(`# snapblock cluster benchmark: ${machine()}, ${started.toISOString()}`);
console.log(
  `# ${ALLOCATED_MIB} MiB allocated in a ${VOLUME_BYTES / MiB} MiB volume (1 MiB runs, 1 MiB holes), ${CHUNK / 1024} KiB chunks, ${ROUNDS} rounds; load average at start ${loadAtStart.join(" ")}`,
);
const cluster = await ClusterUnderTest.start({
  dir,
  nodes: [
    { id: "node-a", poolSize: `${3 * ALLOCATED_MIB + 256}M`, pullRateLimit: "0" },
    { id: "node-b", poolSize: `${4 * ALLOCATED_MIB + 256}M`, pullRateLimit: "0" },
    { id: "node-c", poolSize: `${3 * ALLOCATED_MIB + 256}M`, pullRateLimit: LATENCY_PULL_LIMIT },
  ],
  ...(profDir ? { nodeOptions: ["--cpu-prof", "--cpu-prof-dir", path.resolve(profDir)] } : {}),
  ...(nodeArgs.length > 0 ? { nodeArgs } : {}),
}).catch((err: unknown) => {
  // The processes that started are stopped already; their directory goes too.
  if (!keepDir) rmSync(dir, { recursive: true, force: true });
  throw err;
});
const pullRounds: PullRound[] = [];
const readRounds: ReadRound[] = [];
const replicaRounds: ReplicaRound[] = [];
let full: ReplicaRound | undefined;
try {
  const a = cluster.node("node-a");
  const b = cluster.node("node-b");

  // The source volume. Replicas of a volume's snapshots go to the first node of the rendezvous
  // order for the volume (pkg/cluster's successor list); a name whose first successor is node-b
  // keeps them off node-c, whose pulls are rate-limited for the latency figures.
  let sourceName = "";
  for (let i = 0; !sourceName; i++) {
    const candidate = `bench-src-${i}`;
    const order = rankByRendezvous(`node-a/${candidate}`, [
      { nodeId: "node-b", weight: 1 },
      { nodeId: "node-c", weight: 1 },
    ]);
    if (order[0]?.nodeId === "node-b") sourceName = candidate;
  }
  const { volume: source } = await cluster.createBlockVolume(sourceName, {
    node: "node-a",
    sizeBytes: VOLUME_BYTES,
  });
  const sourceDevice = await cluster.stage("node-a", source.volumeId);
  const fillStarted = performance.now();
  for (let run = 0; run < ALLOCATED_MIB; run += 64) {
    const writes = [];
    for (let r = run; r < Math.min(run + 64, ALLOCATED_MIB); r++) {
      writes.push({ offset: 2 * r * RUN, data: Buffer.from(runData(r)) });
    }
    writeChunks(sourceDevice, writes);
  }
  console.log(
    `# source ${source.volumeId} written through its block device in ${f((performance.now() - fillStarted) / 1000)} s`,
  );
  const snapshot = async (name: string, replicas: number): Promise<string> => {
    const r = await cluster.controller<{ snapshot: { snapshotId: string } }>("CreateSnapshot", {
      name,
      sourceVolumeId: source.volumeId,
      parameters: { "snapblock.dev/replicas": String(replicas) },
    });
    return r.snapshot.snapshotId;
  };
  const restoreSource = await snapshot("bench-snap", 0);

  /** A snapshot with one replica (on node-b): what its replica's pull received. */
  const replicate = async (name: string, changedChunks: number): Promise<ReplicaRound> => {
    const from = b.log.length;
    const t0 = performance.now();
    const origin = await snapshot(name, 1);
    const started = await logLine(
      b,
      from,
      (l) => l.msg === "replica started" && l.origin === origin,
      `the replica of ${origin} on node-b`,
    );
    const done = await logLine(
      b,
      from,
      (l) => l.msg === "pull finished" && l.origin === origin,
      `the replica pull of ${origin}`,
    );
    return {
      snapshot: name,
      changedChunks,
      changedBytes: changedChunks * CHUNK,
      sentBytes: done.bytes ?? 0,
      incremental: started.incremental === true,
      pullSeconds: done.seconds ?? 0,
      snapshotToReplicaSeconds: (performance.now() - t0) / 1000,
    };
  };
  full = await replicate("bench-repl-0", allocated.length);
  console.log(`# first replica (full): ${f(full.sentBytes / MiB)} MiB in ${f(full.pullSeconds)} s`);

  for (let round = 1; round <= ROUNDS; round++) {
    // 1. The TLS ceiling, the pull and the disk reference, in rotating order.
    let tls: TlsCopyResult | undefined;
    let pull:
      | Omit<
          PullRound,
          "round" | "order" | "tls" | "tlsMiBps" | "disk" | "diskMiBps" | "copy" | "copyMiBps" | "load1"
        >
      | undefined;
    const ceiling = async () => {
      tls = await runTlsCopy({
        server: cluster.pki.node("node-a"),
        client: cluster.pki.node("node-b"),
        bytes: ALLOCATED_BYTES,
        messageBytes: CHUNK,
      });
    };
    const restore = async () => {
      const from = b.log.length;
      const cpu0 = { a: cpuSeconds(a.pid), b: cpuSeconds(b.pid) };
      const t0 = performance.now();
      const { volume } = await cluster.createBlockVolume(`restored-b-${round}`, {
        node: "node-b",
        sizeBytes: VOLUME_BYTES,
        fromSnapshot: restoreSource,
      });
      const done = await logLine(
        b,
        from,
        (l) => l.msg === "pull finished" && l.origin === restoreSource,
        "the restore's pull",
      );
      const wall = (performance.now() - t0) / 1000;
      const cpu1 = { a: cpuSeconds(a.pid), b: cpuSeconds(b.pid) };
      await cluster.controller("DeleteVolume", { volumeId: volume.volumeId });
      const bytes = done.bytes ?? 0;
      if (bytes !== ALLOCATED_BYTES)
        throw new Error(`the pull received ${bytes} bytes, not the ${ALLOCATED_BYTES} allocated`);
      pull = {
        pullBytes: bytes,
        pullSeconds: done.seconds ?? NaN,
        pullMiBps: bytes / MiB / (done.seconds ?? NaN),
        restoreToDoneSeconds: wall,
        pullingCpu: cpu1.b - cpu0.b,
        servingCpu: cpu1.a - cpu0.a,
      };
    };
    let disk: DiskWriteResult | undefined;
    const diskWrite = () => {
      disk = runDiskWrite({ dir, bytes: ALLOCATED_BYTES, writeBytes: CHUNK, syncEvery: 256 });
      return Promise.resolve();
    };
    let copy: TlsCopyResult | undefined;
    const plainCopy = async () => {
      const file = path.join(dir, "plain-copy.bin");
      copy = await runTlsCopy({
        server: cluster.pki.node("node-a"),
        client: cluster.pki.node("node-b"),
        bytes: ALLOCATED_BYTES,
        messageBytes: CHUNK,
        toFile: { path: file, syncEvery: 256 },
      });
      rmSync(file, { force: true });
    };
    // The four rotate: each goes first, second, third and last in turn.
    const steps = [
      { name: "ceiling", run: ceiling },
      { name: "pull", run: restore },
      { name: "disk", run: diskWrite },
      { name: "copy", run: plainCopy },
    ];
    const rotated = steps.map((_, i) => steps[(i + round - 1) % steps.length]!);
    for (const step of rotated) await step.run();
    const order = rotated.map((step) => step.name).join(", ");
    pullRounds.push({
      round,
      order,
      tls: tls!,
      tlsMiBps: tls!.bytes / MiB / tls!.seconds,
      disk: disk!,
      diskMiBps: disk!.bytes / MiB / disk!.seconds,
      copy: copy!,
      copyMiBps: copy!.bytes / MiB / copy!.seconds,
      ...pull!,
      load1: loadAverage()[0],
    });

    // 2. First read and on-demand reads on node-c.
    {
      const c = cluster.node("node-c");
      const marks = { controller: cluster.controllerLog.length, c: c.log.length, a: a.log.length };
      const t0 = performance.now();
      const { volume } = await cluster.createBlockVolume(`restored-c-${round}`, {
        node: "node-c",
        sizeBytes: VOLUME_BYTES,
        fromSnapshot: restoreSource,
      });
      const t1 = performance.now();
      if (t1 - t0 > 5000) {
        // Far beyond the usual tens of milliseconds: say what the processes logged meanwhile.
        console.error(`# CreateVolume on node-c took ${f(t1 - t0)} ms; what was logged meanwhile:`);
        for (const [who, lines, from] of [
          ["controller", cluster.controllerLog, marks.controller],
          ["node-c", c.log, marks.c],
          ["node-a", a.log, marks.a],
        ] as const) {
          for (const line of lines.slice(from)) console.error(`#   ${who}: ${line}`);
        }
      }
      const device = await cluster.stage("node-c", volume.volumeId);
      const t2 = performance.now();
      const last = allocated[allocated.length - 1]!;
      const first = readDevice(device, last * CHUNK, CHUNK);
      const t3 = performance.now();
      if (!first.equals(snapshotChunk(last)))
        throw new Error(`chunk ${last} of ${volume.volumeId} differs from the snapshot`);
      const engineName = volume.volumeId.slice(volume.volumeId.indexOf("/") + 1);
      const { client } = await RawNbdClient.open(cluster.exportSocket("node-c", engineName), {
        name: engineName,
        metaContext: false,
      });
      // Chunks from the upper half of the allocated ones, far from the rate-limited pull's cursor.
      const g = new Prng(round);
      const picks = new Set<number>();
      const upper = allocated.slice(allocated.length / 2, -1);
      while (picks.size < Math.min(LATENCY_READS, upper.length)) picks.add(g.pick(upper));
      const timedReads = async (): Promise<number[]> => {
        const ms: number[] = [];
        for (const c of picks) {
          const t = performance.now();
          const reply = await client.readAt(c * CHUNK, CHUNK);
          ms.push(performance.now() - t);
          if (reply.error !== 0) throw new Error(`NBD read of chunk ${c}: error ${reply.error}`);
          if (!reply.data?.equals(snapshotChunk(c)))
            throw new Error(`chunk ${c} read over NBD differs from the snapshot`);
        }
        return ms;
      };
      const uncopiedMs = await timedReads();
      const copiedMs = await timedReads();
      await client.disconnect();
      const progress = (await cluster.engine("node-c").getVolume(engineName))?.pull;
      const lowest = Math.min(...picks);
      const allocatedBelow = allocated.indexOf(lowest) * CHUNK;
      const backgroundBytes = progress?.bytes ?? Infinity;
      await cluster.unstage(volume.volumeId);
      await cluster.controller("DeleteVolume", { volumeId: volume.volumeId });
      readRounds.push({
        round,
        createMs: t1 - t0,
        stageMs: t2 - t1,
        firstReadMs: t3 - t2,
        restoreToFirstReadMs: t3 - t0,
        uncopiedMs,
        copiedMs,
        backgroundBytesAtEnd: backgroundBytes,
        allocatedBelowPicks: allocatedBelow,
        // The background pull copies in chunk order, a batch of 64 at a time: with fewer bytes
        // than those below the lowest pick (less two batches), it had reached none of the picks.
        uncopiedVerified: backgroundBytes + 2 * 64 * CHUNK < allocatedBelow,
      });
    }

    // 3. An incremental replica after rewriting 1% of the allocated chunks.
    {
      const g = new Prng(1000 + round);
      const changed = new Set<number>();
      const n = Math.max(1, Math.round(allocated.length / 100));
      while (changed.size < n) changed.add(g.pick(allocated));
      writeChunks(
        sourceDevice,
        [...changed].map((c, i) => ({
          offset: c * CHUNK,
          data: Prng.fill(Buffer.alloc(CHUNK), 1_000_000 * round + i),
        })),
      );
      replicaRounds.push(await replicate(`bench-repl-${round}`, changed.size));
    }
    console.log(`# round ${round} done, load average ${loadAverage().join(" ")}`);
  }
  await cluster.unstage(source.volumeId);
} finally {
  await cluster.close();
  if (!keepDir) rmSync(dir, { recursive: true, force: true });
}

const loadAtEnd = loadAverage();
const perGiB = (cpu: number, bytes: number) => cpu / (bytes / GiB);
const out: string[] = [];
out.push(
  "",
  `Background pull of a snapshot restored onto another node (${ALLOCATED_MIB} MiB allocated of ${VOLUME_BYTES / MiB} MiB) vs the mutual-TLS loopback copy of the same bytes (bench/tls-copy.ts) and vs writing them to the pools' disk with the pull's fdatasync interval, and vs a plain copy (the TLS copy written to a file on the other side, same fdatasync interval); CPU = user + system seconds per GiB`,
  "",
  "| round | order | pull MiB/s | tls-copy MiB/s | pull / tls-copy | disk write MiB/s | pull / disk | plain copy MiB/s | pull / plain copy | restore call to pull done (s) | CPU/GiB pulling node | CPU/GiB serving node | CPU/GiB tls-copy fetch | CPU/GiB tls-copy serve | load (1 min) |",
  "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
);
for (const r of pullRounds) {
  out.push(
    `| ${r.round} | ${r.order} | ${f(r.pullMiBps)} | ${f(r.tlsMiBps)} | ${f(r.pullMiBps / r.tlsMiBps, 2)}x | ${f(r.diskMiBps)} | ${f(r.pullMiBps / r.diskMiBps, 2)}x | ${f(r.copyMiBps)} | ${f(r.pullMiBps / r.copyMiBps, 2)}x | ${f(r.restoreToDoneSeconds, 2)} | ${f(perGiB(r.pullingCpu, r.pullBytes), 2)} | ${f(perGiB(r.servingCpu, r.pullBytes), 2)} | ${f(perGiB(r.tls.fetchCpu, r.tls.bytes), 2)} | ${f(perGiB(r.tls.serveCpu, r.tls.bytes), 2)} | ${f(r.load1, 2)} |`,
  );
}
const med = <T>(rows: T[], get: (r: T) => number) => median(rows.map(get));
const medianRow = (cells: string[]) => `| ${cells.join(" | ")} |`;
out.push(
  medianRow([
    "**median**",
    "",
    `**${f(med(pullRounds, (r) => r.pullMiBps))}**`,
    `**${f(med(pullRounds, (r) => r.tlsMiBps))}**`,
    `**${f(
      med(pullRounds, (r) => r.pullMiBps / r.tlsMiBps),
      2,
    )}x**`,
    f(med(pullRounds, (r) => r.diskMiBps)),
    `${f(
      med(pullRounds, (r) => r.pullMiBps / r.diskMiBps),
      2,
    )}x`,
    `**${f(med(pullRounds, (r) => r.copyMiBps))}**`,
    `**${f(
      med(pullRounds, (r) => r.pullMiBps / r.copyMiBps),
      2,
    )}x**`,
    f(
      med(pullRounds, (r) => r.restoreToDoneSeconds),
      2,
    ),
    f(
      med(pullRounds, (r) => perGiB(r.pullingCpu, r.pullBytes)),
      2,
    ),
    f(
      med(pullRounds, (r) => perGiB(r.servingCpu, r.pullBytes)),
      2,
    ),
    f(
      med(pullRounds, (r) => perGiB(r.tls.fetchCpu, r.tls.bytes)),
      2,
    ),
    f(
      med(pullRounds, (r) => perGiB(r.tls.serveCpu, r.tls.bytes)),
      2,
    ),
    "",
  ]),
  "",
  `Restored elsewhere (node-c, background pull limited to ${LATENCY_PULL_LIMIT}/s): restore call to the first read of the last allocated chunk through the staged block device (nbdfuse + loop), then ${LATENCY_READS} chunks (${CHUNK / 1024} KiB reads, one at a time) over the volume's NBD export before they were copied (fetched on demand) and again after (local); ms`,
  "",
  "| round | CreateVolume | stage + publish | first read | restore call to first read | uncopied p50 | uncopied p99 | copied p50 | copied p99 | uncopied / copied (p50) | picks not yet pulled |",
  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
);
for (const r of readRounds) {
  out.push(
    `| ${r.round} | ${f(r.createMs)} | ${f(r.stageMs)} | ${f(r.firstReadMs, 2)} | ${f(r.restoreToFirstReadMs)} | ${f(pct(r.uncopiedMs, 50), 2)} | ${f(pct(r.uncopiedMs, 99), 2)} | ${f(pct(r.copiedMs, 50), 2)} | ${f(pct(r.copiedMs, 99), 2)} | ${f(pct(r.uncopiedMs, 50) / pct(r.copiedMs, 50), 1)}x | ${r.uncopiedVerified ? "yes" : `NO (background ${f(r.backgroundBytesAtEnd / MiB)} MiB)`} |`,
  );
}
out.push(
  `| **median** | ${f(med(readRounds, (r) => r.createMs))} | ${f(med(readRounds, (r) => r.stageMs))} | ${f(
    med(readRounds, (r) => r.firstReadMs),
    2,
  )} | **${f(med(readRounds, (r) => r.restoreToFirstReadMs))}** | **${f(
    med(readRounds, (r) => pct(r.uncopiedMs, 50)),
    2,
  )}** | ${f(
    med(readRounds, (r) => pct(r.uncopiedMs, 99)),
    2,
  )} | **${f(
    med(readRounds, (r) => pct(r.copiedMs, 50)),
    2,
  )}** | ${f(
    med(readRounds, (r) => pct(r.copiedMs, 99)),
    2,
  )} | ${f(
    med(readRounds, (r) => pct(r.uncopiedMs, 50) / pct(r.copiedMs, 50)),
    1,
  )}x | |`,
  "",
  `Replicas on node-b (snapblock.dev/replicas=1): the first one full, then each after rewriting 1% of the allocated chunks; bytes = chunk data the replica's pull received`,
  "",
  "| snapshot | incremental | changed chunks | changed MiB | received MiB | received / changed | received / full size | pull s | snapshot call to replica complete (s) |",
  "|---|---|---:|---:|---:|---:|---:|---:|---:|",
);
for (const r of [...(full ? [full] : []), ...replicaRounds]) {
  out.push(
    `| ${r.snapshot} | ${r.incremental ? "yes" : "no"} | ${r.changedChunks} | ${f(r.changedBytes / MiB, 2)} | ${f(r.sentBytes / MiB, 2)} | ${f(r.sentBytes / r.changedBytes, 2)}x | ${f((100 * r.sentBytes) / ALLOCATED_BYTES, 2)}% | ${f(r.pullSeconds, 2)} | ${f(r.snapshotToReplicaSeconds, 2)} |`,
  );
}
out.push(
  `| **median of the incremental** | | | | **${f(
    med(replicaRounds, (r) => r.sentBytes / MiB),
    2,
  )}** | ${f(
    med(replicaRounds, (r) => r.sentBytes / r.changedBytes),
    2,
  )}x | **${f(
    med(replicaRounds, (r) => (100 * r.sentBytes) / ALLOCATED_BYTES),
    2,
  )}%** | ${f(
    med(replicaRounds, (r) => r.pullSeconds),
    2,
  )} | ${f(
    med(replicaRounds, (r) => r.snapshotToReplicaSeconds),
    2,
  )} |`,
  "",
  `# load average: start ${loadAtStart.join(" ")}, end ${loadAtEnd.join(" ")}; ${f((Date.now() - started.getTime()) / 1000, 0)} s in all`,
);
console.log(out.join("\n"));

const json = process.env.BENCH_JSON;
if (json) {
  writeFileSync(
    json,
    JSON.stringify(
      {
        machine: machine(),
        startedAt: started.toISOString(),
        allocatedBytes: ALLOCATED_BYTES,
        volumeBytes: VOLUME_BYTES,
        chunkBytes: CHUNK,
        latencyPullLimit: LATENCY_PULL_LIMIT,
        load: { start: loadAtStart, end: loadAtEnd },
        pull: pullRounds,
        reads: readRounds,
        replicas: [...(full ? [full] : []), ...replicaRounds],
      },
      null,
      2,
    ) + "\n",
  );
}
