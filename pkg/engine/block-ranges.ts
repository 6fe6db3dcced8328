import { SnapblockError } from "../errors/index.js";
import { BLOCK, bitSet, type ChunkSpace } from "./chunk-space.js";
import type { ChunkTables } from "./chunk-tree.js";
import type { Device, Metadata } from "./metadata.js";

/** A run of bytes of a device: [offset, offset + length). */
export interface ByteRange {
  offset: number;
  length: number;
}

/** What a cursor reads: the pool's state (pool-core.ts has it all). */
export interface BlockRangeSource {
  readonly meta: Metadata;
  readonly space: ChunkSpace;
  readonly tables: ChunkTables;
  readonly chunkSize: number;
  alive(device: Device): boolean;
}

/**
 * Candidate chunks one page may look at: a page is computed in one synchronous stretch, so this
 * bounds how long it holds the event loop (a fully written 1 TiB volume is 16 million chunks).
 */
const CHUNKS_PER_PAGE = 16_384;

/**
 * The allocated ranges of a snapshot, or the ranges that differ between two snapshots, read
 * page by page from the chunk tables alone (changed-block tracking, CSI SnapshotMetadata).
 *
 * Granularity: a chunk is reported whole, except a partial chunk (a redirect-on-write that
 * wrote only some 4 KiB blocks, chunk-space.ts), which is reported block by block where that is
 * exact: allocated blocks of a partial chunk over a hole, and the blocks a partial chunk wrote
 * over the chunk the other snapshot maps. Chunks still pending from another node are data: they
 * are allocated, and differ from anything but the same pending chunk.
 *
 * Every page is computed in one synchronous stretch from the tables as they are then; between
 * pages the pool goes on. Snapshots never change, so the pages agree; a snapshot deleted (or
 * deleted and made again under its name) between pages ends the listing with NOT_FOUND rather
 * than mixing two snapshots' answers.
 */
export class BlockRangeCursor {
  /** Size of the (target) snapshot: the ranges lie in [0, sizeBytes). */
  readonly sizeBytes: number;
  private position: number;
  private finished = false;

  constructor(
    private readonly source: BlockRangeSource,
    private readonly target: Device,
    private readonly base: Device | undefined,
    from: number,
  ) {
    this.sizeBytes = target.sizeBytes;
    if (!Number.isSafeInteger(from) || from < 0 || from > target.sizeBytes) {
      // CSI spec, GetMetadataAllocated/GetMetadataDelta errors: "Invalid starting_offset | 11
      // OUT_OF_RANGE | The starting offset is negative or exceeds the volume size".
      throw new SnapblockError(
        "OUT_OF_RANGE",
        `starting offset ${from} is outside ${target.kind} '${target.name}' (0 to ${target.sizeBytes} bytes)`,
      );
    }
    this.position = from;
    this.finished = from === target.sizeBytes;
  }

  /** True once every range has been returned. */
  get done(): boolean {
    return this.finished;
  }

  /**
   * The next ranges, ascending, never overlapping, adjacent ones merged: at most `limit` of them
   * (and fewer when the page's work bound is reached first; possibly none, with more to come).
   */
  next(limit: number): ByteRange[] {
    if (this.finished) return [];
    if (!Number.isInteger(limit) || limit < 1) {
      throw new SnapblockError("INVALID_ARGUMENT", `a page holds at least one range, not ${limit}`);
    }
    for (const d of [this.target, this.base]) {
      if (d && !this.source.alive(d)) {
        throw new SnapblockError(
          "NOT_FOUND",
          `${d.kind} '${d.name}' was deleted while its block metadata was being listed`,
        );
      }
    }
    const cs = this.source.chunkSize;
    const size = this.sizeBytes;
    const chunks = this.source.meta.chunksFor(size);
    const out: ByteRange[] = [];
    let examined = 0;
    for (const chunk of this.candidates(Math.floor(this.position / cs), chunks)) {
      for (const [from, to] of this.pieces(chunk)) {
        const start = Math.max(from, this.position);
        const end = Math.min(to, size);
        if (end <= start) continue;
        const last = out[out.length - 1];
        if (last && last.offset + last.length === start) {
          last.length += end - start;
          continue;
        }
        if (out.length === limit) {
          this.position = start;
          return out;
        }
        out.push({ offset: start, length: end - start });
      }
      if (++examined >= CHUNKS_PER_PAGE) {
        this.position = Math.min(size, (chunk + 1) * cs);
        this.finished = this.position >= size;
        return out;
      }
    }
    this.position = size;
    this.finished = true;
    return out;
  }

  /**
   * Chunks from `first` on that may hold something to report, ascending, each once: the mapped
   * chunks (allocated) or those whose mapping differs (delta), merged with the pending chunks.
   */
  private *candidates(first: number, chunks: number): Generator<number> {
    const { tables } = this.source;
    const streams: Iterator<number>[] = [
      (this.base
        ? tables.diffFrom(this.base.table, this.target.table, first)
        : tables.mappedFrom(this.target.table, first))[Symbol.iterator](),
    ];
    for (const d of [this.target, this.base]) {
      if (d?.pending) streams.push(d.pending.chunksIn(first, this.source.meta.chunksFor(d.sizeBytes)));
    }
    const heads = streams.map((s) => s.next());
    for (;;) {
      let next = Infinity;
      for (const h of heads) if (!h.done && h.value < next) next = h.value;
      if (next === Infinity || next >= chunks) return;
      yield next;
      heads.forEach((h, i) => {
        if (!h.done && h.value === next) heads[i] = streams[i]!.next();
      });
    }
  }

  /** What chunk `chunk` contributes, as byte ranges [from, to) (not yet clipped to the size). */
  private pieces(chunk: number): [number, number][] {
    const cs = this.source.chunkSize;
    const whole: [number, number][] = [[chunk * cs, (chunk + 1) * cs]];
    const target = this.target;
    const base = this.base;
    if (!base) {
      if (target.pending?.has(chunk)) return whole;
      const phys = this.physical(target, chunk);
      if (phys < 0) return [];
      const partial = this.source.space.partials.get(phys);
      // Blocks of a partial chunk over a hole that it never wrote read as zeroes: not allocated.
      return partial && partial.backing < 0 ? this.blockRuns(chunk, [partial.valid]) : whole;
    }
    const pendingBase = this.pendingAt(base, chunk);
    const pendingTarget = this.pendingAt(target, chunk);
    if (pendingBase !== undefined && pendingTarget !== undefined) {
      // Both wait for the same chunk of the same remote snapshot: one fill gives both its content.
      return pendingBase === pendingTarget ? [] : whole;
    }
    if (pendingBase !== undefined || pendingTarget !== undefined) return whole;
    const a = this.physical(base, chunk);
    const b = this.physical(target, chunk);
    if (a === b) return [];
    const da = this.describe(a);
    const db = this.describe(b);
    // Different underlying chunks: the content may differ anywhere in the chunk.
    if (da.under !== db.under) return whole;
    // The same underlying chunk: only the blocks a partial chunk wrote on top of it can differ.
    return this.blockRuns(
      chunk,
      [da.own, db.own].filter((v): v is Uint8Array => v !== undefined),
    );
  }

  private pendingAt(d: Device, chunk: number): string | undefined {
    return d.pending?.has(chunk) ? d.pending.source : undefined;
  }

  /** Physical chunk of `d` at `chunk`, -1 for a hole or beyond the device's end. */
  private physical(d: Device, chunk: number): number {
    if (chunk >= this.source.meta.chunksFor(d.sizeBytes)) return -1;
    return this.source.tables.physical(d.table, chunk);
  }

  /**
   * A mapped chunk as the chunk its content reads from (`under`) and the 4 KiB blocks it holds
   * on top of that (`own`, a partial chunk's valid blocks). A hole is under -1 with nothing own.
   */
  private describe(phys: number): { under: number; own?: Uint8Array } {
    if (phys < 0) return { under: -1 };
    const partial = this.source.space.partials.get(phys);
    return partial ? { under: partial.backing, own: partial.valid } : { under: phys };
  }

  /** The 4 KiB blocks set in any of `bitmaps`, as byte ranges of logical chunk `chunk`. */
  private blockRuns(chunk: number, bitmaps: Uint8Array[]): [number, number][] {
    const cs = this.source.chunkSize;
    const blocks = cs / BLOCK;
    const out: [number, number][] = [];
    for (let b = 0; b < blocks;) {
      if (!bitmaps.some((v) => bitSet(v, b))) {
        b++;
        continue;
      }
      let e = b + 1;
      while (e < blocks && bitmaps.some((v) => bitSet(v, e))) e++;
      out.push([chunk * cs + b * BLOCK, chunk * cs + e * BLOCK]);
      b = e;
    }
    return out;
  }
}
