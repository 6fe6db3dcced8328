/**
 * Space accounting benchmark (`npm run bench:space`): what computing who holds the pool's space
 * (per snapshot exclusive and shared bytes, per volume the bytes only its snapshots hold) costs
 * on pools with much data and many snapshots: the whole computation, and the longest pause of the
 * event loop when it runs in slices as the pool runs it for large tables (docs/space.md).
 *
 * Only metadata matters here, so the pool's data area is a sink (writes are dropped, reads return
 * zeroes) and the metadata lives in memory: volumes of hundreds of GiB are "written" in seconds.
 * Not a test: it prints a Markdown table for BENCHMARKS.md.
 *
 * Env: BENCH_SPACE_GIB (written sizes, default "16,64,256"), BENCH_SPACE_SNAPSHOTS (default 100),
 * BENCH_SPACE_CHURN (share of the volume rewritten between snapshots, default 0.01).
 */
import { cpus, hostname } from "node:os";
import {
  Pool,
  Prng,
  accountSpace,
  accountSpaceSliced,
  type Storage,
  type StorageFile,
} from "../pkg/engine/index.js";

const GiB = 1 << 30;
const CHUNK = 64 * 1024;
const env = process.env;
const SIZES = (env.BENCH_SPACE_GIB ?? "16,64,256").split(",").map(Number);
const SNAPSHOTS = Number(env.BENCH_SPACE_SNAPSHOTS ?? 100);
const CHURN = Number(env.BENCH_SPACE_CHURN ?? 0.01);

class MemoryFile implements StorageFile {
  constructor(
    private readonly files: Map<string, Buffer>,
    private readonly name: string,
  ) {}
  private get buf(): Buffer {
    return this.files.get(this.name) ?? Buffer.alloc(0);
  }
  read(buffer: Buffer, bufferOffset: number, length: number, position: number): Promise<number> {
    return Promise.resolve(this.buf.copy(buffer, bufferOffset, position, position + length));
  }
  write(buffers: readonly Buffer[], position: number): Promise<void> {
    const data = Buffer.concat(buffers);
    let buf = this.buf;
    if (position + data.length > buf.length) {
      const grown = Buffer.alloc(Math.max(position + data.length, buf.length * 2));
      buf.copy(grown);
      buf = grown.subarray(0, position + data.length);
    }
    data.copy(buf, position);
    this.files.set(this.name, buf);
    return Promise.resolve();
  }
  sync = (): Promise<void> => Promise.resolve();
  size = (): Promise<number> => Promise.resolve(this.buf.length);
  truncate(length: number): Promise<void> {
    this.files.set(this.name, Buffer.from(this.buf.subarray(0, length)));
    return Promise.resolve();
  }
  close = (): Promise<void> => Promise.resolve();
}

/** The data area: drops writes, reads zeroes. */
const sink: StorageFile = {
  read: (buffer, bufferOffset, length) =>
    Promise.resolve(buffer.fill(0, bufferOffset, bufferOffset + length) && length),
  write: () => Promise.resolve(),
  sync: () => Promise.resolve(),
  size: () => Promise.resolve(0),
  truncate: () => Promise.resolve(),
  close: () => Promise.resolve(),
};

function metadataOnlyStorage(): Storage {
  const files = new Map<string, Buffer>();
  return {
    location: "memory (data discarded)",
    open: (name, o) => {
      if (name === "data") return Promise.resolve(sink);
      if (!o.create && !files.has(name)) return Promise.reject(new Error(`${name}: no such file`));
      if (!files.has(name)) files.set(name, Buffer.alloc(0));
      return Promise.resolve(new MemoryFile(files, name));
    },
    exists: (name) => Promise.resolve(name === "data" || files.has(name)),
    rename: (from, to) => {
      files.set(to, files.get(from)!);
      files.delete(from);
      return Promise.resolve();
    },
    remove: (name) => Promise.resolve(void files.delete(name)),
    syncDir: () => Promise.resolve(),
  };
}

async function longestIdleGap(ms: number): Promise<number> {
  let longest = 0;
  let last = performance.now();
  const end = last + ms;
  while (performance.now() < end) {
    await new Promise((r) => setImmediate(r));
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
  }
  return longest;
}

function timed(fn: () => void, repeat = 5): { min: number; median: number } {
  const ms: number[] = [];
  for (let i = 0; i < repeat; i++) {
    const t = performance.now();
    fn();
    ms.push(performance.now() - t);
  }
  ms.sort((a, b) => a - b);
  return { min: ms[0]!, median: ms[Math.floor(ms.length / 2)]! };
}

async function scenario(gib: number): Promise<string> {
  const chunks = (gib * GiB) / CHUNK;
  const pool = await Pool.create({
    storage: metadataOnlyStorage(),
    sizeBytes: 4 * gib * GiB,
    autoCommitMs: 0,
    checkpointBytes: 1 << 40,
    fillPartials: false,
  });
  await pool.createVolume("v", gib * GiB);
  const h = pool.openVolume("v");
  const piece = Buffer.alloc(16 * CHUNK); // 1 MiB writes: whole chunks, no partials
  const built = performance.now();
  for (let c = 0; c < chunks; c += 16) await h.write(c * CHUNK, piece);
  await pool.commit();
  const rng = new Prng(gib);
  const one = Buffer.alloc(CHUNK);
  for (let s = 0; s < SNAPSHOTS; s++) {
    await pool.createSnapshot("v", `s${s}`);
    for (let i = 0; i < chunks * CHURN; i++) await h.write(rng.int(chunks) * CHUNK, one);
    await pool.commit();
  }
  const buildSeconds = (performance.now() - built) / 1000;
  // The whole computation at once: its CPU cost (and the pause it would be if run in one go).
  const whole = timed(() => accountSpace(pool.meta, pool.space), 5);
  // In slices, as the pool runs it for large tables: the longest the event loop waits (a probe
  // that re-arms setImmediate measures the gaps) and the wall time to a result.
  const sliced: { pause: number; total: number }[] = [];
  for (let round = 0; round < 5; round++) {
    let longest = 0;
    let last = performance.now();
    let probing = true;
    const probe = (): void => {
      const now = performance.now();
      longest = Math.max(longest, now - last);
      last = now;
      if (probing) setImmediate(probe);
    };
    setImmediate(probe);
    const t = performance.now();
    await accountSpaceSliced(pool.meta, pool.space, { sliceMs: 2 });
    sliced.push({ pause: longest, total: performance.now() - t });
    probing = false;
    await new Promise((r) => setImmediate(r));
  }
  sliced.sort((a, b) => a.total - b.total);
  const mid = sliced[Math.floor(sliced.length / 2)]!;
  // The noise floor: the longest gap the same probe sees with nothing to do, for as long (GC, and
  // the other processes of the machine).
  const floor = await longestIdleGap(mid.total);
  const cached = timed(() => pool.stats(), 20);
  const st = pool.stats();
  const held = st.volumes[0]!.snapshotOnlyBytes;
  h.close();
  await pool.close();
  return `| ${gib} GiB | ${SNAPSHOTS} | ${(CHURN * 100).toFixed(1)} % | ${(st.metadataBytes / 2 ** 20).toFixed(0)} MiB | ${whole.median.toFixed(0)} ms (min ${whole.min.toFixed(0)}) | ${mid.pause.toFixed(1)} ms (idle: ${floor.toFixed(1)}) | ${mid.total.toFixed(0)} ms | ${cached.median.toFixed(3)} ms | ${(held / GiB).toFixed(2)} GiB | ${buildSeconds.toFixed(0)} s |`;
}

console.log(
  `Space accounting, ${hostname()}, ${cpus().length} x ${cpus()[0]?.model ?? "?"}, Node.js ${process.version}`,
);
console.log("");
console.log(
  "| written | snapshots | churn per snapshot | metadata in memory | whole computation at once | longest pause, in 2 ms slices | sliced, to a result | unchanged (cached) | held by snapshots only | build |",
);
console.log("|---|---|---|---|---|---|---|---|---|---|");
for (const gib of SIZES) console.log(await scenario(gib));
