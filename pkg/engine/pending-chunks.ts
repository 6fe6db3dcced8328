/**
 * Chunks of a device whose content is not in this pool yet: a volume restored (or a snapshot
 * replicated) from another node starts with the source's allocated chunks *pending*, and each
 * is filled as it arrives (on demand when read, or by the background pull). A pending chunk
 * never reads as zeroes: the read waits for the fill (or fails with the fetch's error).
 *
 * `source` names where the content comes from (the upper layer's id of the remote snapshot); the
 * pool hands it to the chunk fetcher registered for it. A snapshot or clone of a device with
 * pending chunks inherits them (same source): one fill completes the chunk in all of them.
 *
 * Bits are one per logical chunk; `count` is their population, kept exact by every change.
 */
export class PendingChunks {
  count: number;

  constructor(
    readonly source: string,
    public bits: Uint8Array,
    /** Chunks pending when the device was made: the denominator of its progress. */
    public total: number,
  ) {
    this.count = 0;
    for (const byte of bits) this.count += POPCOUNT[byte]!;
  }

  static empty(source: string, chunks: number): PendingChunks {
    return new PendingChunks(source, new Uint8Array(Math.ceil(chunks / 8)), 0);
  }

  clone(): PendingChunks {
    const copy = new PendingChunks(this.source, Uint8Array.from(this.bits), this.total);
    return copy;
  }

  has(chunk: number): boolean {
    const byte = this.bits[chunk >> 3];
    return byte !== undefined && (byte & (1 << (chunk & 7))) !== 0;
  }

  /** Marks [first, first + count) pending; returns how many were not already. */
  add(first: number, count: number): number {
    let added = 0;
    for (let c = first; c < first + count; c++) {
      const i = c >> 3;
      const mask = 1 << (c & 7);
      const byte = this.bits[i];
      if (byte === undefined) break;
      if ((byte & mask) === 0) {
        this.bits[i] = byte | mask;
        added++;
      }
    }
    this.count += added;
    return added;
  }

  /** Clears one chunk; true if it was pending. */
  clear(chunk: number): boolean {
    const i = chunk >> 3;
    const mask = 1 << (chunk & 7);
    const byte = this.bits[i];
    if (byte === undefined || (byte & mask) === 0) return false;
    this.bits[i] = byte & ~mask;
    this.count--;
    return true;
  }

  /** Clears [first, first + count). */
  clearRange(first: number, count: number): void {
    for (let c = first; c < first + count; c++) {
      if ((c & 7) === 0 && c + 8 <= first + count && this.bits[c >> 3] === 0) {
        c += 7; // a whole empty byte
        continue;
      }
      this.clear(c);
    }
  }

  /** Room for more chunks (the device grew); new chunks are not pending. */
  grow(chunks: number): void {
    const need = Math.ceil(chunks / 8);
    if (need <= this.bits.length) return;
    const next = new Uint8Array(need);
    next.set(this.bits);
    this.bits = next;
  }

  /** Pending chunks in [lo, hi), ascending; whole empty bytes are skipped. */
  *chunksIn(lo: number, hi: number): Generator<number> {
    for (let c = lo; c < hi;) {
      const byte = this.bits[c >> 3];
      if (byte === undefined) return;
      if (byte === 0) {
        c = ((c >> 3) + 1) << 3;
        continue;
      }
      if ((byte & (1 << (c & 7))) !== 0) yield c;
      c++;
    }
  }

  /** The pending chunks as [first, count] runs (checkpoint and records). */
  ranges(): [number, number][] {
    const out: [number, number][] = [];
    let start = -1;
    let prev = -2;
    for (const c of this.chunksIn(0, this.bits.length * 8)) {
      if (c === prev + 1) {
        prev = c;
        continue;
      }
      if (start >= 0) out.push([start, prev - start + 1]);
      start = c;
      prev = c;
    }
    if (start >= 0) out.push([start, prev - start + 1]);
    return out;
  }
}

const POPCOUNT = Uint8Array.from({ length: 256 }, (_, b) => {
  let n = 0;
  for (let x = b; x; x >>= 1) n += x & 1;
  return n;
});
