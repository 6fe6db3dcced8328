import { SnapblockError } from "../errors/index.js";

export interface Partial {
  /** Chunk the missing blocks read from, or -1 for zeroes. */
  backing: number;
  /** One bit per 4 KiB block of the chunk, set where the chunk holds its own data. */
  valid: Uint8Array;
  /**
   * The volume whose write made it, and where in that volume (memory only: for partial chunks
   * loaded from a checkpoint, found again at open from the volumes' tables, device -1 where only
   * snapshots map it). Whether that volume still maps it tells the filler whether a volume or
   * only snapshots hold it (pool.ts, worthFilling).
   */
  owner?: { device: number; chunk: number };
}

/** Granularity of partial chunks: the block size every file system and the page cache use. */
export const BLOCK = 4096;

/**
 * Memory of one partial chunk's entry besides its bitmap (the map's entry, the object, its owner)
 * and of one distinct bitmap kept for them (a small Uint8Array with its own ArrayBuffer, its key
 * and use count), measured with Node.js 20 (heap and array buffers over 200,000 entries: 122 and
 * about 210 bytes, plus the key and count here).
 */
const PARTIAL_ENTRY_BYTES = 128;
const BITMAP_BYTES = 320;

/** A bitmap's content as a map key (at most 32 bytes: 256 blocks of a 1 MiB chunk). */
function bitmapKey(bits: Uint8Array): string {
  return String.fromCharCode(...bits);
}

export function bitSet(bits: Uint8Array, i: number): boolean {
  return (bits[i >> 3]! & (1 << (i & 7))) !== 0;
}

export function setBits(bits: Uint8Array, from: number, to: number): void {
  for (let i = from; i < to; i++) bits[i >> 3] = bits[i >> 3]! | (1 << (i & 7));
}

export function allSet(bits: Uint8Array, count: number): boolean {
  for (let i = 0; i < count; i++) if (!bitSet(bits, i)) return false;
  return true;
}

/**
 * The physical side of a pool: how many chunks there are, who references each (a reference count
 * per chunk: the number of chunk-table leaves pointing at it), and which are free.
 *
 * A chunk whose count drops to zero is not reusable at once. It becomes free only when
 *  1. the metadata record that released it is durable (committed), otherwise a crash would bring
 *     back a table pointing at a chunk that meanwhile holds someone else's data; and
 *  2. no data I/O that started before the release is still running (a read that looked up the
 *     chunk before the release must not see a new owner's bytes).
 * The first is tracked with record sequence numbers, the second with I/O epochs.
 */
export class ChunkSpace {
  /** Reference count per physical chunk, grown as the high-water mark grows. */
  private refs: Uint32Array;
  /** Chunks below `highWater` were handed out at least once; above it all are free. */
  private highWater = 0;
  private freeStack: Uint32Array;
  private freeCount = 0;
  /** Released chunks waiting for their release to be durable and for older I/O to end. */
  private pending: { chunk: number; seq: number; epoch: number }[] = [];
  private pendingHead = 0;
  /** Chunks handed to a writer whose mapping is not yet applied. */
  private readonly reserved = new Set<number>();
  /** Chunks whose count fell to 1 by a record not yet durable: not writable in place until then. */
  readonly unsharedAt = new Map<number, number>();

  /**
   * Partial chunks: a chunk written only in some 4 KiB blocks by a redirect-on-write. Its other
   * blocks read from `backing` (the chunk it replaced, on which it holds a reference) or as zeroes
   * (backing -1). Keyed by the partial chunk; the background filler completes them.
   */
  readonly partials = new Map<number, Partial>();
  /**
   * Backing references per chunk: how many partial chunks read their missing blocks from it. A
   * chunk's count minus these is the number of table leaves that map it (space-accounting.ts).
   */
  private readonly backingRefs = new Map<number, number>();
  /**
   * One copy of each distinct bitmap that partial chunks hold, with how many hold it. Bitmaps are
   * never modified in place (a change makes a new one), so partial chunks can share them: most
   * hold one of a few patterns (a 4 KiB write makes one of 16 in a 64 KiB chunk), and a bitmap of
   * its own took about two thirds of a partial chunk's memory.
   */
  private readonly bitmaps = new Map<string, { bits: Uint8Array; uses: number }>();

  /** Called when a reservation is refused for lack of free chunks (the pool reports it). */
  exhausted: (() => void) | undefined;

  private epoch = 1;
  private readonly activeIo = new Map<number, number>();

  constructor(readonly capacity: number) {
    this.refs = new Uint32Array(1024);
    this.freeStack = new Uint32Array(256);
  }

  get inUse(): number {
    return this.highWater - this.freeCount - (this.pending.length - this.pendingHead) - this.reserved.size;
  }

  get free(): number {
    return this.capacity - this.inUse - this.reserved.size;
  }

  get highWaterMark(): number {
    return this.highWater;
  }

  /** Bytes of memory the accounting itself holds. */
  get memoryBytes(): number {
    return (
      this.refs.byteLength +
      this.freeStack.byteLength +
      (this.pending.length - this.pendingHead) * 24 +
      this.partialBytes +
      this.backingRefs.size * 48
    );
  }

  /** Bytes of memory the partial chunks take (their entries and the distinct bitmaps they hold). */
  get partialBytes(): number {
    return this.partials.size * PARTIAL_ENTRY_BYTES + this.bitmaps.size * BITMAP_BYTES;
  }

  refCount(chunk: number): number {
    return chunk < this.refs.length ? this.refs[chunk]! : 0;
  }

  /** Loading: marks a chunk referenced once more (tables are being rebuilt from disk). */
  addRef(chunk: number): void {
    if (chunk >= this.capacity) {
      throw new SnapblockError(
        "CORRUPT",
        `metadata references chunk ${chunk} beyond the pool's ${this.capacity}`,
      );
    }
    this.growRefs(chunk + 1);
    if (chunk >= this.highWater) this.highWater = chunk + 1;
    this.refs[chunk]!++;
  }

  /** A leaf copy (shadowing) adds one more reference to a chunk that is already in use. */
  ref(chunk: number): void {
    this.refs[chunk]!++;
  }

  /**
   * After loading: every chunk below the high-water mark with no reference is free.
   * Called once, before any allocation.
   */
  rebuildFreeList(): void {
    this.freeCount = 0;
    for (let c = this.highWater - 1; c >= 0; c--) if (this.refs[c] === 0) this.pushFree(c);
  }

  /**
   * Drops one reference. Returns the new count. At zero the chunk joins the pending-free list,
   * tagged with the releasing record's sequence number.
   */
  release(chunk: number, seq: number): number {
    const n = --this.refs[chunk]!;
    if (n === 0) {
      this.unsharedAt.delete(chunk);
      this.pending.push({ chunk, seq, epoch: ++this.epoch });
      const partial = this.partials.get(chunk);
      if (partial) this.dropPartial(chunk, partial, seq);
    } else if (n === 1) {
      this.unsharedAt.set(chunk, seq);
    }
    return n;
  }

  /** Moves pending chunks whose release is durable and not watched by older I/O to the free list. */
  reclaim(committedSeq: number): void {
    const oldest = this.oldestActiveEpoch();
    while (this.pendingHead < this.pending.length) {
      const p = this.pending[this.pendingHead]!;
      if (p.seq > committedSeq || p.epoch > oldest) break;
      this.pushFree(p.chunk);
      this.pendingHead++;
    }
    if (this.pendingHead > 1024 && this.pendingHead * 2 > this.pending.length) {
      this.pending = this.pending.slice(this.pendingHead);
      this.pendingHead = 0;
    }
    if (committedSeq !== this.sweptAt) {
      this.sweptAt = committedSeq;
      for (const [chunk, seq] of this.unsharedAt) if (seq <= committedSeq) this.unsharedAt.delete(chunk);
    }
  }

  private sweptAt = -1;

  /** Makes `chunk` partial: blocks in `valid` are its own, the rest read from `backing`. */
  setPartial(chunk: number, backing: number, valid: Uint8Array, owner?: Partial["owner"]): void {
    if (backing >= 0) {
      this.ref(backing);
      this.addBacking(backing);
    }
    const bits = this.shareBitmap(valid);
    this.partials.set(chunk, owner ? { backing, valid: bits, owner } : { backing, valid: bits });
  }

  /** Loading a checkpoint: a partial chunk and its reference on the backing chunk. */
  loadPartial(chunk: number, backing: number, valid: Uint8Array): void {
    if (backing >= 0) {
      this.addRef(backing);
      this.addBacking(backing);
    }
    this.partials.set(chunk, { backing, valid: this.shareBitmap(valid) });
  }

  /** The partial chunk holds more of its blocks now (`valid`, a new bitmap: none is changed in place). */
  updatePartial(partial: Partial, valid: Uint8Array): void {
    const bits = this.shareBitmap(valid);
    this.dropBitmap(partial.valid);
    partial.valid = bits;
  }

  /** The partial chunk has all its blocks now: drops its reference on the backing chunk. */
  completePartial(chunk: number, seq: number): void {
    const partial = this.partials.get(chunk);
    if (partial) this.dropPartial(chunk, partial, seq);
  }

  private dropPartial(chunk: number, partial: Partial, seq: number): void {
    this.partials.delete(chunk);
    this.dropBitmap(partial.valid);
    if (partial.backing >= 0) this.dropBacking(partial.backing, seq);
  }

  /** The kept copy of a bitmap equal to `bits` (`bits` itself, kept, if there is none yet). */
  private shareBitmap(bits: Uint8Array): Uint8Array {
    const key = bitmapKey(bits);
    let kept = this.bitmaps.get(key);
    if (!kept) {
      kept = { bits, uses: 0 };
      this.bitmaps.set(key, kept);
    }
    kept.uses++;
    return kept.bits;
  }

  private dropBitmap(bits: Uint8Array): void {
    const key = bitmapKey(bits);
    const kept = this.bitmaps.get(key);
    if (kept && --kept.uses === 0) this.bitmaps.delete(key);
  }

  /** How many partial chunks are backed by `chunk`. */
  backingRefCount(chunk: number): number {
    return this.backingRefs.get(chunk) ?? 0;
  }

  /** References on `chunk` from table leaves (its count less the partial chunks it backs). */
  leafRefCount(chunk: number): number {
    return this.refCount(chunk) - this.backingRefCount(chunk);
  }

  /** Chunks some partial chunk is backed by, with how many back on each. */
  backings(): ReadonlyMap<number, number> {
    return this.backingRefs;
  }

  private addBacking(chunk: number): void {
    this.backingRefs.set(chunk, (this.backingRefs.get(chunk) ?? 0) + 1);
  }

  private dropBacking(chunk: number, seq: number): void {
    const n = (this.backingRefs.get(chunk) ?? 1) - 1;
    if (n === 0) this.backingRefs.delete(chunk);
    else this.backingRefs.set(chunk, n);
    this.release(chunk, seq);
  }

  /** Chunks reserve() can hand out now (released chunks still pending are not among them). */
  get reservable(): number {
    return this.freeCount + (this.capacity - this.highWater);
  }

  /** Whether some released chunk waits only for a commit to become free. */
  hasPendingAfter(committedSeq: number): boolean {
    for (let i = this.pendingHead; i < this.pending.length; i++)
      if (this.pending[i]!.seq > committedSeq) return true;
    return false;
  }

  /**
   * Takes `n` free chunks for a writer, preferring low, contiguous chunk numbers so that
   * sequential writes land sequentially. Throws NO_SPACE if there are not enough.
   */
  reserve(n: number): number[] {
    if (n > this.reservable) {
      this.exhausted?.();
      throw new SnapblockError("NO_SPACE", `pool is full: ${n} chunk(s) needed, ${this.reservable} free`);
    }
    const out: number[] = [];
    while (out.length < n && this.freeCount > 0) out.push(this.freeStack[--this.freeCount]!);
    while (out.length < n) {
      const c = this.highWater++;
      this.growRefs(this.highWater);
      out.push(c);
    }
    for (const c of out) this.reserved.add(c);
    return out;
  }

  /** A reserved chunk now mapped by one leaf. */
  commitReserved(chunk: number): void {
    this.reserved.delete(chunk);
    this.refs[chunk] = 1;
  }

  /** A reserved chunk the writer did not use (its write failed): free again at once. */
  unreserve(chunk: number): void {
    this.reserved.delete(chunk);
    this.pushFree(chunk);
  }

  /** Replay: a MAP record names the chunk directly. */
  claimForReplay(chunk: number): void {
    if (chunk >= this.capacity) {
      throw new SnapblockError("CORRUPT", `journal maps chunk ${chunk} beyond the pool's ${this.capacity}`);
    }
    this.growRefs(chunk + 1);
    if (chunk >= this.highWater) this.highWater = chunk + 1;
    if (this.refs[chunk] !== 0) {
      throw new SnapblockError("CORRUPT", `journal maps chunk ${chunk}, which is still referenced`);
    }
    this.refs[chunk] = 1;
  }

  /** Replay only: pending frees are immediately free (everything replayed is durable). */
  settleAfterReplay(): void {
    this.pending = [];
    this.sweptAt = -1;
    this.pendingHead = 0;
    this.unsharedAt.clear();
    this.rebuildFreeList();
  }

  /** I/O epochs: every data I/O holds one from start to end. */
  beginIo(): number {
    const e = this.epoch;
    this.activeIo.set(e, (this.activeIo.get(e) ?? 0) + 1);
    return e;
  }

  endIo(token: number): void {
    const n = (this.activeIo.get(token) ?? 1) - 1;
    if (n === 0) this.activeIo.delete(token);
    else this.activeIo.set(token, n);
  }

  private oldestActiveEpoch(): number {
    let min = Infinity;
    for (const e of this.activeIo.keys()) if (e < min) min = e;
    return min;
  }

  /** Chunks in use by more than one referrer, and by exactly one. */
  sharing(): { sharedChunks: number; exclusiveChunks: number } {
    let shared = 0;
    let exclusive = 0;
    for (let c = 0; c < this.highWater; c++) {
      const n = this.refs[c]!;
      if (n > 1) shared++;
      else if (n === 1) exclusive++;
    }
    return { sharedChunks: shared, exclusiveChunks: exclusive };
  }

  /** For the consistency check: the free list and pending list as sets. */
  freeSnapshot(): { free: number[]; pending: number[]; reserved: number[] } {
    return {
      reserved: [...this.reserved],
      free: Array.from(this.freeStack.subarray(0, this.freeCount)),
      pending: this.pending.slice(this.pendingHead).map((p) => p.chunk),
    };
  }

  private pushFree(chunk: number): void {
    if (this.freeCount === this.freeStack.length) {
      const next = new Uint32Array(this.freeStack.length * 2);
      next.set(this.freeStack);
      this.freeStack = next;
    }
    this.freeStack[this.freeCount++] = chunk;
  }

  private growRefs(n: number): void {
    if (n <= this.refs.length) return;
    let len = this.refs.length;
    while (len < n) len *= 2;
    const next = new Uint32Array(Math.min(len, Math.max(n, this.capacity)));
    next.set(this.refs);
    this.refs = next;
  }
}
