import { constants as fsc, existsSync, readSync, writeSync, writevSync } from "node:fs";
import { mkdir, open, readFile, rename, rm, stat, writeFile, type FileHandle } from "node:fs/promises";
import { join, resolve } from "node:path";
import { SnapblockError } from "../errors/index.js";
import { isLive, readProcess } from "../proc/index.js";
import { AlignedBuffers } from "./aligned-buffers.js";
import { DirectFile } from "./direct-file.js";
import { NodeFile, skipBytes, splitAtBoundaries } from "./node-file.js";
import type { Storage, StorageFile, StorageOpenOptions } from "./storage.js";

/** Lock files this process holds: a second open of the same pool in one process is refused too. */
const heldLocks = new Set<string>();

/** Is the pool lock's owner alive? A killed owner not reaped yet (a zombie) holds nothing. */
async function processExists(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
  // No procfs, or /proc will not say: trust signal 0.
  if (!existsSync("/proc/self/stat")) return true;
  return isLive(await readProcess(pid).catch(() => ({ pid, state: "?", argv: [] })));
}

/**
 * Where positional reads and writes run (syncs always go to libuv's thread pool):
 * - "threadpool": every read and write is a thread-pool request;
 * - "inline": every read and write is a pread/pwrite on the calling thread;
 * - "adaptive" (default): large reads (256 KiB and up) go to the thread pool, where several run
 *   in parallel, and so do large writes of files other than the data file; the data file's
 *   writes run inline, cut into 64 KiB pieces (InlineFile's folioCap); small reads run inline
 *   while they keep coming back in page-cache time, and move to the thread pool (re-probing now
 *   and then) when they start waiting for the disk (ReadPlacement).
 *
 * Why: the data path's small I/O mostly hits the page cache, where a 4 KiB pread or pwrite costs
 * microseconds, while a thread-pool round trip costs a cross-thread handoff and wakeup each way; on
 * a 2-vCPU node inline small I/O measured several times the IOPS (BENCHMARKS.md). But an inline
 * read that misses the cache blocks the event loop for a disk access and misses cannot overlap,
 * and one thread copying 1 MiB reads is slower than four (large buffered writes of one file
 * serialize on its inode lock, so for them the thread pool buys nothing). The adaptive mode takes
 * each side's strength; the other two modes are there to measure it and for unusual nodes.
 */
export type IoMode = "adaptive" | "inline" | "threadpool";

/**
 * How the pool's data file meets the disk:
 * - "buffered": through the page cache (the I/O mode above decides which thread);
 * - "direct": O_DIRECT, no page cache (direct-file.ts says why and what it costs);
 * - "hybrid": requests of 256 KiB and more O_DIRECT, smaller ones through the page cache. Large
 *   buffered writes leave large folios in the cache, and on current kernels every later 4 KiB
 *   write into one walks all its blocks (ext4_block_write_begin: 38-42% of the server's CPU
 *   under random 4 KiB writes, BENCHMARKS.md); large requests gain nothing from the cache anyway.
 *   The kernel keeps the two paths coherent (a direct write flushes and invalidates cached pages
 *   of its range before and after), and the engine never writes one block from two requests.
 * Metadata files (journal, checkpoint, superblock) are always buffered: small, and fsynced.
 */
export type DataIo = "buffered" | "direct" | "hybrid";

export interface NodeStorageOptions {
  io?: IoMode;
  dataIo?: DataIo;
}

/** Storage on a real directory through Node's fs (positional I/O). */
export class NodeStorage implements Storage {
  readonly location: string;
  private readonly io: IoMode;
  private readonly dataIo: DataIo;
  private aligned: AlignedBuffers | undefined;

  constructor(dir: string, options: NodeStorageOptions = {}) {
    this.location = dir;
    this.io = options.io ?? "adaptive";
    this.dataIo = options.dataIo ?? "buffered";
  }

  static async create(dir: string, options: NodeStorageOptions = {}): Promise<NodeStorage> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return new NodeStorage(dir, options);
  }

  async open(name: string, options: StorageOpenOptions): Promise<StorageFile> {
    const flags = fsc.O_RDWR | (options.create ? fsc.O_CREAT : 0);
    if (options.bulk && this.dataIo !== "buffered") {
      this.aligned ??= new AlignedBuffers(this.location);
      const handle = await open(join(this.location, name), flags | fsc.O_DIRECT, 0o600);
      const direct = new DirectFile(handle, this.aligned);
      if (this.dataIo === "direct") return direct;
      try {
        return new HybridFile(await open(join(this.location, name), flags, 0o600), direct);
      } catch (err) {
        await direct.close();
        throw err;
      }
    }
    const handle = await open(join(this.location, name), flags, 0o600);
    if (this.io === "threadpool") return new NodeFile(handle);
    const cap = options.bulk ? FOLIO_CAP : undefined;
    return this.io === "inline" ? new InlineFile(handle, cap) : new AdaptiveFile(handle, cap);
  }

  async exists(name: string): Promise<boolean> {
    try {
      await stat(join(this.location, name));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw err;
    }
  }

  async rename(from: string, to: string): Promise<void> {
    await rename(join(this.location, from), join(this.location, to));
  }

  async remove(name: string): Promise<void> {
    await rm(join(this.location, name), { force: true });
  }

  /**
   * A lock file holding the owner's pid, created with O_EXCL. A lock left by a process that no
   * longer exists (killed, crashed) is taken over; one held by a live process is refused.
   */
  async lock(): Promise<() => Promise<void>> {
    const path = resolve(this.location, "lock");
    if (heldLocks.has(path)) {
      throw new SnapblockError("BUSY", `pool at ${this.location} is already open in this process`);
    }
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await writeFile(path, `${process.pid}\n`, { flag: "wx", mode: 0o600 });
        heldLocks.add(path);
        return async () => {
          heldLocks.delete(path);
          await rm(path, { force: true });
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
      const owner = Number((await readFile(path, "utf8").catch(() => "")).trim());
      if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && (await processExists(owner))) {
        throw new SnapblockError(
          "BUSY",
          `pool at ${this.location} is in use by process ${owner}; stop it first (or remove ${path} if that process is not snapblock)`,
        );
      }
      await rm(path, { force: true }); // stale: its owner is gone
    }
    throw new SnapblockError("BUSY", `could not take the lock ${path}`);
  }

  async syncDir(): Promise<void> {
    const dir = await open(this.location, fsc.O_RDONLY | fsc.O_DIRECTORY);
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }
}

/** Positional reads and writes on the calling thread; sync, size, truncate, close as NodeFile. */
class InlineFile extends NodeFile {
  private readonly fd: number;

  /** The thread-pool versions, for subclasses that choose per request. */
  protected pooledRead(
    buffer: Buffer,
    bufferOffset: number,
    length: number,
    position: number,
  ): Promise<number> {
    return NodeFile.prototype.read.call(this, buffer, bufferOffset, length, position);
  }

  protected pooledWrite(buffers: readonly Buffer[], position: number): Promise<void> {
    return NodeFile.prototype.write.call(this, buffers, position);
  }

  constructor(
    handle: FileHandle,
    /**
     * Buffered writes to the data file are cut at every multiple of this many bytes of the file.
     * The page cache sizes a written range's folios by the write: one 1 MiB write leaves up to
     * 1 MiB folios, and every later 4 KiB write into one walks all its blocks
     * (ext4_block_write_begin; on 6.x kernels 5-10x the CPU of a 4 KiB write into a 64 KiB folio,
     * BENCHMARKS.md). Cut at 64 KiB, a large write costs the same and later small writes stay cheap.
     */
    protected readonly folioCap?: number,
  ) {
    super(handle);
    this.fd = handle.fd;
  }

  override read(buffer: Buffer, bufferOffset: number, length: number, position: number): Promise<number> {
    try {
      return Promise.resolve(readSync(this.fd, buffer, bufferOffset, length, position));
    } catch (err) {
      return Promise.reject(toError(err));
    }
  }

  override write(buffers: readonly Buffer[], position: number): Promise<void> {
    try {
      this.writeInline(buffers, position);
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(toError(err));
    }
  }

  writeNow(buffers: readonly Buffer[], position: number): boolean {
    this.writeInline(buffers, position);
    return true;
  }

  readNow(buffer: Buffer, bufferOffset: number, length: number, position: number): number | undefined {
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, buffer, bufferOffset + done, length - done, position + done);
      if (n === 0) break;
      done += n;
    }
    return done;
  }

  private writeInline(buffers: readonly Buffer[], position: number): void {
    const cap = this.folioCap;
    // The usual 4 KiB write inside one piece goes straight through.
    if (cap === undefined || (buffers.length === 1 && (position % cap) + buffers[0]!.length <= cap))
      return this.writeRun(buffers, position);
    for (const p of splitAtBoundaries(buffers, position, cap)) this.writeRun(p.buffers, p.position);
  }

  private writeRun(buffers: readonly Buffer[], position: number): void {
    // The data path's usual case, one buffer, without building a list.
    if (buffers.length === 1) {
      const buf = buffers[0]!;
      for (let done = 0; done < buf.length;)
        done += writeSync(this.fd, buf, done, buf.length - done, position + done);
      return;
    }
    let pos = position;
    let pending = buffers.filter((b) => b.length > 0);
    while (pending.length > 0) {
      const n =
        pending.length === 1
          ? writeSync(this.fd, pending[0]!, 0, pending[0]!.length, pos)
          : writevSync(this.fd, pending, pos);
      pos += n;
      pending = skipBytes(pending, n);
    }
  }
}

const LARGE = 256 * 1024;
/** See InlineFile's folioCap: the default chunk size. */
const FOLIO_CAP = 64 * 1024;

/**
 * Decides, read by read, whether a small read runs inline or on the thread pool. Reads run
 * inline while they come back in page-cache time; when more than half of the last 32 were slower
 * than a cache hit, the next `reprobeAfter` go to the thread pool (where misses overlap), then
 * inline reads are tried again.
 *
 * A count over a window, not an average: on a busy node a cached read is now and then preempted
 * for hundreds of microseconds, and such outliers (a few per hundred reads at QD16 on 2 vCPUs)
 * must not send every read to the thread pool, where each one costs a cross-thread handoff and
 * two wakeups; reads that miss the cache are slow run after run.
 */
export class ReadPlacement {
  /** One bit per recent inline read, newest lowest: 1 = slower than a cache hit. */
  private slow = 0;
  private offloaded = -1;

  constructor(
    /** A 4 KiB pread served from the page cache takes a few microseconds; a disk read, far more. */
    private readonly cacheHitUs = 40,
    private readonly reprobeAfter = 2000,
  ) {}

  /** true: run this read inline and report its time with `inlineTook`. */
  inline(): boolean {
    if (this.offloaded < 0) return true;
    if (++this.offloaded < this.reprobeAfter) return false;
    this.offloaded = -1;
    this.slow = 0;
    return true;
  }

  inlineTook(us: number): void {
    const slow = us > this.cacheHitUs ? 1 : 0;
    this.slow = ((this.slow << 1) | slow) >>> 0;
    if (slow && popcount32(this.slow) > 16) this.offloaded = 0;
  }
}

/** The "adaptive" mode (IoMode): writes inline but other files' large ones, reads as ReadPlacement says. */
class AdaptiveFile extends InlineFile {
  private readonly placement = new ReadPlacement();

  override read(buffer: Buffer, bufferOffset: number, length: number, position: number): Promise<number> {
    if (length >= LARGE || !this.placement.inline())
      return this.pooledRead(buffer, bufferOffset, length, position);
    const started = performance.now();
    const result = super.read(buffer, bufferOffset, length, position);
    this.placement.inlineTook((performance.now() - started) * 1000);
    return result;
  }

  /** Inline only while ReadPlacement has small reads inline (they come back in cache time). */
  override readNow(
    buffer: Buffer,
    bufferOffset: number,
    length: number,
    position: number,
  ): number | undefined {
    if (length >= LARGE || !this.placement.inline()) return undefined;
    const started = performance.now();
    const n = super.readNow(buffer, bufferOffset, length, position);
    this.placement.inlineTook((performance.now() - started) * 1000);
    return n;
  }

  // Large writes of the data file run inline too, cut into folio-sized pieces (above): buffered
  // writes to one file take its inode lock, so thread-pool writers wait for each other anyway, and
  // on the kernel path one thread writing 64 KiB pieces in turn measured 1.3x the MiB/s of 16
  // pieces on the thread pool at 0.75x the CPU per MiB (BENCHMARKS.md). Other files' large writes
  // (a checkpoint can be tens of MiB) stay off the event loop.
  override write(buffers: readonly Buffer[], position: number): Promise<void> {
    return this.folioCap === undefined && totalLength(buffers) >= LARGE
      ? this.pooledWrite(buffers, position)
      : super.write(buffers, position);
  }

  override writeNow(buffers: readonly Buffer[], position: number): boolean {
    return (this.folioCap !== undefined || totalLength(buffers) < LARGE) && super.writeNow(buffers, position);
  }
}

/** Large requests O_DIRECT, small ones as AdaptiveFile does (see DataIo "hybrid"). */
class HybridFile extends AdaptiveFile {
  constructor(
    handle: FileHandle,
    private readonly direct: DirectFile,
  ) {
    super(handle);
  }

  override read(buffer: Buffer, bufferOffset: number, length: number, position: number): Promise<number> {
    return length >= LARGE
      ? this.direct.read(buffer, bufferOffset, length, position)
      : super.read(buffer, bufferOffset, length, position);
  }

  override write(buffers: readonly Buffer[], position: number): Promise<void> {
    return totalLength(buffers) >= LARGE
      ? this.direct.write(buffers, position)
      : super.write(buffers, position);
  }

  // sync: one fdatasync of the file covers the writes of both descriptors (same inode).

  override async close(): Promise<void> {
    try {
      await super.close();
    } finally {
      await this.direct.close();
    }
  }
}

function popcount32(v: number): number {
  v -= (v >>> 1) & 0x55555555;
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

function totalLength(buffers: readonly Buffer[]): number {
  let total = 0;
  for (const b of buffers) total += b.length;
  return total;
}

function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
