/**
 * One arm of the protection benchmark (bench/protection-bench.ts runs it in a fresh process per
 * arm, so memory and CPU figures belong to one arm only). Opens a LocalEngine on a pool in a
 * directory (the same engine, point scheduler and thinning the node plugin runs), creates one
 * volume, fills it, sets the protection policy (protected arm) and drives a random 4 KiB write
 * load on it for the given time. Every write carries its block number and sequence number, and
 * the writer logs when each began and ended, so a restored point can be checked block by block.
 * At the end (protected arm) it restores random retained points and verifies them.
 * Prints one JSON line (RunResult). Args: a JSON object (RunArgs).
 */
import { statSync } from "node:fs";
import { isSnapblockError } from "../pkg/errors/index.js";
import { LocalEngine } from "../pkg/engine-api/index.js";
import { isPointName, Prng } from "../pkg/engine/index.js";
import { cpuSeconds } from "./process-cpu.js";

export interface RunArgs {
  dir: string;
  seconds: number;
  /** Protection policy; "" for the unprotected arm. */
  policy: string;
  volumeBytes: number;
  poolBytes: number;
  /** Writes in flight at once. */
  depth: number;
  /** Writes go to the first this many bytes of the volume (its working set). */
  workingSetBytes: number;
  seed: number;
  /** Random retained points restored and verified at the end (protected arm). */
  restores: number;
  /** The pool's chunk size (absent: the engine's default). */
  chunkBytes?: number;
  /**
   * Seconds after which the run is in steady state (thinning deletes as many points as it takes
   * and the data file has stopped growing); the steady figures cover the load after it.
   */
  steadyFromSeconds: number;
  /** The writer flushes the volume this often (ms; 0 or absent: never), as a database's group commit would. */
  flushEveryMs?: number;
}

export interface Sample {
  /** Seconds since the load began. */
  t: number;
  metadataBytes: number;
  rssBytes: number;
  points: number;
  /** Writes completed so far. */
  writes: number;
  /** The pool's allocated bytes (the data file's used chunks). */
  allocatedBytes: number;
  /**
   * Bytes the data file occupies on disk: it grows where a block is written for the first time,
   * which is also where the page cache needs a page it never had (on a VM whose host takes back
   * the guest's free memory, each such page is a host fault).
   */
  fileBytes: number;
}

export interface RestoreCheck {
  point: string;
  /** Age of the point when restored, seconds. */
  ageSeconds: number;
  /** CreateVolume from the point until its device is open, ms. */
  restoreMs: number;
  blocksChecked: number;
  /** Blocks whose content was no value the writer's log allows at the point's time. */
  mismatches: number;
}

export interface RunResult {
  writes: number;
  seconds: number;
  writesPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  /** The longest write: a stall of the event loop (a long synchronous step) shows here. */
  maxMs: number;
  cpuSeconds: number;
  cpuMicrosPerWrite: number;
  samples: Sample[];
  pointsTaken: number;
  pointsThinned: number;
  pointsDroppedForSpace: number;
  pointsAtEnd: number;
  /** Bytes only the volume's snapshots (its points) hold at the end. */
  heldBytes: number;
  allocatedBytes: number;
  restores: RestoreCheck[];
  /** Points chosen for a restore that thinning deleted before it began. */
  thinnedBeforeRestore: number;
  /** Commits of the pool (data file fdatasync, then the journal's): how many, mean and longest. */
  commits: { count: number; meanMs: number; maxMs: number };
  /** The same figures over the steady part only (absent when the run ended before it). */
  steady?: { seconds: number; writesPerSecond: number; p99Ms: number; cpuMicrosPerWrite: number };
}

const BLOCK = 4096;
const MAGIC = 0x5b10c4;
const args = JSON.parse(process.argv[2] ?? "{}") as RunArgs;
const blocks = args.volumeBytes / BLOCK;
const hotBlocks = Math.min(blocks, Math.floor(args.workingSetBytes / BLOCK));

let taken = 0;
let thinned = 0;
let dropped = 0;
let commitCount = 0;
let commitSeconds = 0;
let commitMaxSeconds = 0;
/** When each point's take returned (Date.now ms): the cut happened between its stamp and this. */
const tookAt = new Map<string, number>();
const engine = new LocalEngine({
  nodeId: "bench",
  poolDir: `${args.dir}/pool`,
  metadataFile: `${args.dir}/csi-metadata.json`,
  createIfMissing: {
    sizeBytes: args.poolBytes,
    ...(args.chunkBytes !== undefined ? { chunkSize: args.chunkBytes } : {}),
  },
  observer: {
    committed: (e) => {
      commitCount++;
      commitSeconds += e.seconds;
      commitMaxSeconds = Math.max(commitMaxSeconds, e.seconds);
    },
    pointTaken: (e) => {
      taken++;
      tookAt.set(e.name, Date.now());
    },
    pointsDeleted: (e) => {
      if (e.reason === "space") dropped += e.count;
      else thinned += e.count;
    },
  },
});
await engine.open();
const VOL = "vol";
await engine.createVolume({ name: VOL, sizeBytes: args.volumeBytes, meta: {} });
const dev = engine.openVolumeDevice(VOL);

/** A block's content for sequence number `seq` (0: the fill). */
function content(buf: Buffer, block: number, seq: number): Buffer {
  buf.fill(seq & 0xff);
  buf.writeUInt32LE(MAGIC, 0);
  buf.writeUInt32LE(block, 4);
  buf.writeUInt32LE(seq, 8);
  return buf;
}

// The fill: every block written once (sequence 0), so the load overwrites real data.
{
  const piece = Buffer.alloc(1 << 20);
  const one = Buffer.alloc(BLOCK);
  for (let off = 0; off < args.volumeBytes; off += piece.length) {
    for (let b = 0; b < piece.length / BLOCK; b++) content(one, off / BLOCK + b, 0).copy(piece, b * BLOCK);
    await dev.write(off, piece);
  }
  await dev.flush();
}
if (args.policy) await engine.setProtection(VOL, args.policy);

// The write log, by sequence number (1-based; index 0 unused).
let cap = 1 << 20;
let blockOf = new Int32Array(cap);
let startMs = new Float64Array(cap);
let endMs = new Float64Array(cap);
let latency = new Float64Array(cap);
function grow(): void {
  cap *= 2;
  const g = <T extends Int32Array | Float64Array>(a: T, make: (n: number) => T): T => {
    const n = make(cap);
    n.set(a);
    return n;
  };
  blockOf = g(blockOf, (n) => new Int32Array(n));
  startMs = g(startMs, (n) => new Float64Array(n));
  endMs = g(endMs, (n) => new Float64Array(n));
  latency = g(latency, (n) => new Float64Array(n));
}

const rng = new Prng(args.seed);
const inFlight = new Set<number>();
let seq = 0;
let done = 0;
const samples: Sample[] = [];
const pointCount = async (): Promise<number> =>
  (await engine.listSnapshots()).items.filter((s) => s.sourceVolume === VOL && isPointName(s.name)).length;

const t0 = performance.now();
const endAt = t0 + args.seconds * 1000;
const cpu0 = cpuSeconds(process.pid);
/** Where the steady part began: the first write's sequence number, time and CPU then. */
let steadyStart: { seq: number; t: number; cpu: number } | undefined;
const steadyTimer = setTimeout(() => {
  steadyStart = { seq: seq + 1, t: performance.now(), cpu: cpuSeconds(process.pid) };
}, args.steadyFromSeconds * 1000);
const sampler = setInterval(() => {
  void pointCount().then((points) => {
    // usage(), not poolStats(): the full statistics account every table's space, which with a
    // point a second is a fresh computation each time, and that would be this sampler's cost
    // counted as the arm's (a fifth of the protected arm's thread at 4 KiB chunks).
    const st = engine.poolUsage();
    samples.push({
      t: Math.round((performance.now() - t0) / 100) / 10,
      metadataBytes: st?.metadataBytes ?? 0,
      rssBytes: process.memoryUsage().rss,
      points,
      writes: done,
      allocatedBytes: st?.allocatedBytes ?? 0,
      fileBytes: statSync(`${args.dir}/pool/data`).blocks * 512,
    });
  });
}, 1000);

// The writer's own flushes (both arms alike), one at a time.
let flushing = false;
const flusher =
  (args.flushEveryMs ?? 0) > 0
    ? setInterval(() => {
        if (flushing) return;
        flushing = true;
        dev.flush().then(
          () => (flushing = false),
          (err: unknown) => {
            console.error(`flush failed: ${String(err)}`);
            process.exit(1);
          },
        );
      }, args.flushEveryMs)
    : undefined;

async function worker(): Promise<void> {
  const buf = Buffer.alloc(BLOCK);
  // A write's latency counts from when it was ready to go (its predecessor's completion), not
  // from when the event loop got round to issuing it: a client with requests queued (the kernel,
  // an NBD client at its queue depth) waits through a stall of the loop, and measuring from the
  // issue would leave such stalls out (coordinated omission).
  let ready = performance.now();
  while (performance.now() < endAt) {
    let block = rng.int(hotBlocks);
    // One write per block at a time, so a block's writes are ordered and the log can tell
    // which values a point may hold.
    while (inFlight.has(block)) block = rng.int(hotBlocks);
    inFlight.add(block);
    const s = ++seq;
    if (s >= cap) grow();
    blockOf[s] = block;
    startMs[s] = Date.now();
    await dev.write(block * BLOCK, content(buf, block, s));
    const completed = performance.now();
    latency[s] = completed - ready;
    ready = completed;
    endMs[s] = Date.now();
    inFlight.delete(block);
    done++;
    // Requests reach the engine from socket events (NBD), with the event loop turning between
    // them; a loop of writes that completes in microtasks would starve the point scheduler.
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}
await Promise.all(Array.from({ length: args.depth }, () => worker()));
const elapsed = (performance.now() - t0) / 1000;
const cpuEnd = cpuSeconds(process.pid);
const cpu = cpuEnd - cpu0;
const endedAt = performance.now();
clearInterval(sampler);
clearInterval(flusher);
clearTimeout(steadyTimer);

const percentile = (from: number, p: number): number => {
  // A typed copy sorts numerically without a comparator: tens of millions of writes in a long run.
  const lat = latency.slice(from, seq + 1).sort();
  return lat[Math.min(lat.length - 1, Math.floor((lat.length * p) / 100))] ?? 0;
};
const pct = (p: number): number => percentile(1, p);
let steady: RunResult["steady"];
if (steadyStart !== undefined && seq >= steadyStart.seq) {
  const writes = seq - steadyStart.seq + 1;
  const seconds = (endedAt - steadyStart.t) / 1000;
  steady = {
    seconds,
    writesPerSecond: writes / seconds,
    p99Ms: percentile(steadyStart.seq, 99),
    cpuMicrosPerWrite: ((cpuEnd - steadyStart.cpu) / writes) * 1e6,
  };
}

const restores: RestoreCheck[] = [];
let thinnedBeforeRestore = 0;
if (args.policy) {
  // A point is chosen from the list just before its restore: the scheduler keeps thinning while
  // the restores run, and a point thinned between list and restore is not an error of the point
  // (it is counted, and another one is chosen).
  const pick = new Prng(args.seed + 1);
  for (let attempt = 0; restores.length < args.restores && attempt < args.restores * 4; attempt++) {
    const points = (await engine.listSnapshots()).items.filter(
      (s) => s.sourceVolume === VOL && isPointName(s.name),
    );
    if (points.length === 0) break;
    const p = points[pick.int(points.length)]!;
    try {
      restores.push(await verifyRestore(p.name, p.createdAt));
    } catch (err) {
      if (!isSnapblockError(err, "NOT_FOUND")) throw err;
      thinnedBeforeRestore++;
    }
  }
}

/**
 * Restores point `name` into a new volume (as `snapblock volume restore` does through the
 * engine), times it until the volume is open, and reads every block: each must hold a value of
 * its own block whose write began before the point's take returned, and no older than the last
 * write of that block that had ended before the point's stamp.
 */
async function verifyRestore(name: string, createdAt: Date): Promise<RestoreCheck> {
  const stamp = createdAt.getTime();
  const cutEnd = tookAt.get(name) ?? stamp;
  const target = `restore-${restores.length}`;
  const r0 = performance.now();
  await engine.createVolume({
    name: target,
    sizeBytes: args.volumeBytes,
    meta: {},
    source: { kind: "snapshot", name },
  });
  const restored = engine.openVolumeDevice(target);
  const restoreMs = performance.now() - r0;
  // The oldest acceptable sequence per block: the last write that had ended before the stamp.
  const floor = new Int32Array(blocks);
  for (let s = 1; s <= seq; s++) if (endMs[s]! < stamp) floor[blockOf[s]!] = s;
  let mismatches = 0;
  for (let off = 0; off < args.volumeBytes; off += 1 << 20) {
    const piece = await restored.read(off, 1 << 20);
    for (let i = 0; i < (1 << 20) / BLOCK; i++) {
      const block = off / BLOCK + i;
      const at = i * BLOCK;
      const s = piece.readUInt32LE(at + 8);
      const ok =
        piece.readUInt32LE(at) === MAGIC &&
        piece.readUInt32LE(at + 4) === block &&
        piece[at + BLOCK - 1] === (s & 0xff) &&
        s >= floor[block]! &&
        (s === 0 || (s <= seq && blockOf[s] === block && startMs[s]! <= cutEnd));
      if (!ok) mismatches++;
    }
  }
  restored.close();
  await engine.deleteVolume(target);
  return {
    point: name,
    ageSeconds: Math.round((Date.now() - stamp) / 100) / 10,
    restoreMs,
    blocksChecked: blocks,
    mismatches,
  };
}

const space = await engine.space();
const result: RunResult = {
  writes: done,
  seconds: elapsed,
  writesPerSecond: done / elapsed,
  p50Ms: pct(50),
  p99Ms: pct(99),
  p999Ms: pct(99.9),
  maxMs: pct(100),
  cpuSeconds: cpu,
  cpuMicrosPerWrite: (cpu / done) * 1e6,
  samples,
  pointsTaken: taken,
  pointsThinned: thinned,
  pointsDroppedForSpace: dropped,
  pointsAtEnd: await pointCount(),
  heldBytes: space.volumes.find((v) => v.name === VOL)?.snapshotOnlyBytes ?? 0,
  allocatedBytes: space.pool.allocatedBytes,
  restores,
  thinnedBeforeRestore,
  commits: {
    count: commitCount,
    meanMs: commitCount > 0 ? (commitSeconds / commitCount) * 1000 : 0,
    maxMs: commitMaxSeconds * 1000,
  },
  ...(steady !== undefined ? { steady } : {}),
};
dev.close();
await engine.close();
process.stdout.write(JSON.stringify(result) + "\n");
