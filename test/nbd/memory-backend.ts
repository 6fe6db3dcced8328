/**
 * TEST FIXTURE: an in-memory, sparse implementation of NbdBackend, used by the NBD tests until
 * (and besides) the real engine. It behaves like the engine's BlockDevice: chunks are allocated
 * on first write, trim and write-zeroes give whole chunks back and zero partial ones, extents()
 * reports the allocation map, and every method validates its range with SnapblockError.
 *
 * Test knobs: a chunk budget (NO_SPACE when exhausted), random latency (to make requests
 * complete out of order), fault injection, resizing, and counters of calls.
 */
import { SnapblockError, type ErrorCode } from "../../pkg/errors/index.js";
import type { NbdBackend, NbdBackendExtent, NbdWriteOptions } from "../../pkg/nbd/index.js";

export interface MemoryBackendOptions {
  name?: string;
  size: number;
  chunkSize?: number;
  readOnly?: boolean;
  /** Maximum chunks that may be allocated; beyond it writes fail with NO_SPACE. */
  maxChunks?: number;
  /** Each operation waits a random time up to this many ms (0: resolve on the next tick). */
  maxLatencyMs?: number;
  /** ...and at least this many ms. */
  minLatencyMs?: number;
}

export interface MemoryBackendCounters {
  reads: number;
  writes: number;
  flushes: number;
  trims: number;
  writeZeroes: number;
  fuaWrites: number;
  extents: number;
  maxConcurrent: number;
}

export class MemoryBackend implements NbdBackend {
  readonly name: string;
  readonly chunkSize: number;
  readOnly: boolean;
  size: number;
  readonly counters: MemoryBackendCounters = {
    reads: 0,
    writes: 0,
    flushes: 0,
    trims: 0,
    writeZeroes: 0,
    fuaWrites: 0,
    extents: 0,
    maxConcurrent: 0,
  };
  /** Set to make the next operations fail: the error is thrown by every call until cleared. */
  failWith: { code: ErrorCode; message: string } | Error | undefined;
  private readonly chunks = new Map<number, Buffer>();
  private readonly maxChunks: number;
  private maxLatencyMs: number;
  private minLatencyMs: number;
  private concurrent = 0;

  constructor(options: MemoryBackendOptions) {
    this.name = options.name ?? "memory";
    this.size = options.size;
    this.chunkSize = options.chunkSize ?? 64 * 1024;
    this.readOnly = options.readOnly ?? false;
    this.maxChunks = options.maxChunks ?? Number.POSITIVE_INFINITY;
    this.maxLatencyMs = options.maxLatencyMs ?? 0;
    this.minLatencyMs = options.minLatencyMs ?? 0;
  }

  get allocatedChunks(): number {
    return this.chunks.size;
  }

  setLatency(maxLatencyMs: number, minLatencyMs = 0): void {
    this.maxLatencyMs = maxLatencyMs;
    this.minLatencyMs = minLatencyMs;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    await this.enter(offset, length, false);
    try {
      this.counters.reads += 1;
      const out = Buffer.alloc(length);
      this.forEachPiece(offset, length, (index, within, pieceLength, outOffset) => {
        this.chunks.get(index)?.copy(out, outOffset, within, within + pieceLength);
      });
      return out;
    } finally {
      this.leave();
    }
  }

  async write(offset: number, data: Buffer, options?: NbdWriteOptions): Promise<void> {
    await this.enter(offset, data.length, true);
    try {
      this.counters.writes += 1;
      if (options?.fua === true) this.counters.fuaWrites += 1;
      this.reserve(offset, data.length);
      this.forEachPiece(offset, data.length, (index, within, pieceLength, dataOffset) => {
        data.copy(this.chunkFor(index), within, dataOffset, dataOffset + pieceLength);
      });
    } finally {
      this.leave();
    }
  }

  async flush(): Promise<void> {
    await this.enter(0, 0, false);
    this.counters.flushes += 1;
    this.leave();
  }

  async trim(offset: number, length: number, _options?: NbdWriteOptions): Promise<void> {
    await this.enter(offset, length, true);
    this.counters.trims += 1;
    this.zeroRange(offset, length);
    this.leave();
  }

  async writeZeroes(offset: number, length: number, _options?: NbdWriteOptions): Promise<void> {
    await this.enter(offset, length, true);
    this.counters.writeZeroes += 1;
    this.zeroRange(offset, length);
    this.leave();
  }

  extents(offset: number, length: number): NbdBackendExtent[] {
    this.check(offset, length, false);
    this.counters.extents += 1;
    const out: NbdBackendExtent[] = [];
    let position = offset;
    const end = offset + length;
    while (position < end) {
      const index = Math.floor(position / this.chunkSize);
      const stop = Math.min(end, (index + 1) * this.chunkSize);
      const allocated = this.chunks.has(index);
      const last = out[out.length - 1];
      if (last !== undefined && last.allocated === allocated) last.length += stop - position;
      else out.push({ offset: position, length: stop - position, allocated });
      position = stop;
    }
    return out;
  }

  /** Test helper: the bytes of the whole device (for comparisons). */
  snapshot(): Buffer {
    const out = Buffer.alloc(this.size);
    for (const [index, chunk] of this.chunks) {
      const start = index * this.chunkSize;
      if (start < this.size) chunk.copy(out, start, 0, Math.min(this.chunkSize, this.size - start));
    }
    return out;
  }

  private zeroRange(offset: number, length: number): void {
    this.forEachPiece(offset, length, (index, within, pieceLength) => {
      if (pieceLength === this.chunkSize) this.chunks.delete(index);
      else this.chunks.get(index)?.fill(0, within, within + pieceLength);
    });
  }

  private reserve(offset: number, length: number): void {
    let needed = 0;
    this.forEachPiece(offset, length, (index) => {
      if (!this.chunks.has(index)) needed += 1;
    });
    if (this.chunks.size + needed > this.maxChunks) {
      throw new SnapblockError(
        "NO_SPACE",
        `${this.name}: no free chunk left for ${length} bytes at ${offset}`,
      );
    }
  }

  private chunkFor(index: number): Buffer {
    let chunk = this.chunks.get(index);
    if (chunk === undefined) {
      chunk = Buffer.alloc(this.chunkSize);
      this.chunks.set(index, chunk);
    }
    return chunk;
  }

  private forEachPiece(
    offset: number,
    length: number,
    visit: (index: number, within: number, pieceLength: number, bufferOffset: number) => void,
  ): void {
    let position = offset;
    const end = offset + length;
    while (position < end) {
      const index = Math.floor(position / this.chunkSize);
      const within = position - index * this.chunkSize;
      const pieceLength = Math.min(this.chunkSize - within, end - position);
      visit(index, within, pieceLength, position - offset);
      position += pieceLength;
    }
  }

  private check(offset: number, length: number, modifies: boolean): void {
    if (this.failWith !== undefined) {
      if (this.failWith instanceof Error) throw this.failWith;
      throw new SnapblockError(this.failWith.code, this.failWith.message);
    }
    if (modifies && this.readOnly) throw new SnapblockError("READ_ONLY", `${this.name} is read-only`);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new SnapblockError("INVALID_ARGUMENT", `bad range ${offset}+${length}`);
    }
    if (offset + length > this.size) {
      throw new SnapblockError(
        "OUT_OF_RANGE",
        `${offset}+${length} is beyond the end of ${this.name} (${this.size})`,
      );
    }
  }

  /** Counts the operation as in progress for its whole (simulated) duration, latency included. */
  private async enter(offset: number, length: number, modifies: boolean): Promise<void> {
    this.concurrent += 1;
    this.counters.maxConcurrent = Math.max(this.counters.maxConcurrent, this.concurrent);
    const delay =
      this.maxLatencyMs > 0 ? this.minLatencyMs + Math.random() * (this.maxLatencyMs - this.minLatencyMs) : 0;
    await new Promise<void>((resolve) => (delay > 0 ? setTimeout(resolve, delay) : setImmediate(resolve)));
    try {
      this.check(offset, length, modifies);
    } catch (err) {
      this.concurrent -= 1;
      throw err;
    }
  }

  private leave(): void {
    this.concurrent -= 1;
  }
}
