/**
 * Space accounting benchmark (`npm run bench:space`): how long computing who holds the pool's
 * space (Pool.stats(): per snapshot exclusive and shared bytes, per volume the bytes only its
 * snapshots hold) blocks the event loop, on pools with much data and many snapshots. The
 * computation is synchronous, so its duration is the I/O stall it causes; it runs when the
 * metadata changed since the last one (metrics scrape, CLI, a CreateSnapshot with a space limit).
 *
 * Only metadata matters here, so the pool's data area is a sink (writes are dropped, reads return
 * zeroes) and the metadata lives in memory: volumes of hundreds of GiB are "written" in seconds.
 * Not a test: it prints a Markdown table for BENCHMARKS.md.
 *
 * Env: BENCH_SPACE_GIB (written sizes, default "16,64,256"), BENCH_SPACE_SNAPSHOTS (default 100),
 * BENCH_SPACE_CHURN (share of the volume rewritten between snapshots, default 0.01),
 * BENCH_SPACE_WRITES (random chunk writes between two warm computations, default 1000).
 */
import { cpus, hostname } from "node:os";
import { Pool, Prng, accountSpace, type Storage, type StorageFile } from "../pkg/engine/index.js";

const GiB = 1 << 30;
const CHUNK = 64 * 1024;
const env = process.env;
const SIZES = (env.BENCH_SPACE_GIB ?? "16,64,256").split(",").map(Number);
const SNAPSHOTS = Number(env.BENCH_SPACE_SNAPSHOTS ?? 100);
const CHURN = Number(env.BENCH_SPACE_CHURN ?? 0.01);
const WRITES = Number(env.BENCH_SPACE_WRITES ?? 1000);

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
  // Cold: the whole computation, nothing remembered (the first call after the pool opens).
  const cold = timed(() => accountSpace(pool.meta, pool.space), 7);
  // Warm: after WRITES random chunk writes (each a redirect-on-write or an in-place write), what a
  // metrics scrape pays: the pass over the nodes plus the slots of the leaves that changed.
  pool.stats();
  const warmMs: number[] = [];
  for (let round = 0; round < 7; round++) {
    for (let i = 0; i < WRITES; i++) await h.write(rng.int(chunks) * CHUNK, one);
    const t = performance.now();
    pool.stats();
    warmMs.push(performance.now() - t);
  }
  warmMs.sort((a, b) => a - b);
  const cached = timed(() => pool.stats(), 20);
  const st = pool.stats();
  const held = st.volumes[0]!.snapshotOnlyBytes;
  h.close();
  await pool.close();
  const warm = warmMs[Math.floor(warmMs.length / 2)]!;
  return `| ${gib} GiB | ${SNAPSHOTS} | ${(CHURN * 100).toFixed(1)} % | ${(st.metadataBytes / 2 ** 20).toFixed(0)} MiB | ${cold.median.toFixed(1)} ms (min ${cold.min.toFixed(1)}) | ${warm.toFixed(1)} ms (min ${warmMs[0]!.toFixed(1)}) | ${cached.median.toFixed(3)} ms | ${(held / GiB).toFixed(2)} GiB | ${buildSeconds.toFixed(0)} s |`;
}

console.log(
  `Space accounting, ${hostname()}, ${cpus().length} x ${cpus()[0]?.model ?? "?"}, Node.js ${process.version}`,
);
console.log("");
console.log(
  `| written | snapshots | churn per snapshot | metadata in memory | cold (nothing remembered) | after ${WRITES} random writes | unchanged | held by snapshots only | build |`,
);
console.log("|---|---|---|---|---|---|---|---|---|");
for (const gib of SIZES) console.log(await scenario(gib));
