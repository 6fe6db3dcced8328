/**
 * Reusable buffers for request payloads: power-of-two size classes, each buffer handed out at most
 * once until given back. A connection serving hundreds of MiB/s would otherwise allocate (and
 * leave V8 to collect) a fresh buffer per request. Memory kept for reuse is bounded; beyond it
 * given-back buffers are left to the garbage collector.
 *
 * Only give back a buffer nothing reads or writes any more (e.g. once the engine's write of it
 * settled); giving back anything the pool did not hand out, or the same buffer twice, is ignored.
 */
export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  /** Every buffer this pool made, by its memory, and whether it is out. */
  private readonly made = new WeakMap<ArrayBufferLike, { whole: Buffer; out: boolean }>();
  private kept = 0;

  constructor(
    private readonly options: {
      /** Smallest buffer the pool deals in; smaller requests get a plain allocation. */
      minBytes: number;
      /** Largest; larger requests get a plain allocation. */
      maxBytes: number;
      /** Bytes kept for reuse at most, over all size classes. */
      maxKeptBytes: number;
    },
  ) {}

  /** Bytes currently kept for reuse. */
  get keptBytes(): number {
    return this.kept;
  }

  /** A buffer of exactly `bytes` bytes (contents undefined). */
  take(bytes: number): Buffer {
    const { minBytes, maxBytes } = this.options;
    if (bytes < minBytes || bytes > maxBytes) return Buffer.allocUnsafe(bytes);
    const size = sizeClass(bytes);
    let whole = this.free.get(size)?.pop();
    if (whole === undefined) {
      whole = Buffer.allocUnsafeSlow(size);
      this.made.set(whole.buffer, { whole, out: true });
    } else {
      this.kept -= size;
      this.made.get(whole.buffer)!.out = true;
    }
    return whole.subarray(0, bytes);
  }

  /** Gives back a buffer from take() that nothing uses any more. */
  give(buffer: Buffer): void {
    const entry = this.made.get(buffer.buffer);
    if (entry === undefined || !entry.out || buffer.byteOffset !== entry.whole.byteOffset) return;
    entry.out = false;
    const size = entry.whole.length;
    if (this.kept + size > this.options.maxKeptBytes) return;
    this.kept += size;
    let list = this.free.get(size);
    if (list === undefined) {
      list = [];
      this.free.set(size, list);
    }
    list.push(entry.whole);
  }
}

function sizeClass(bytes: number): number {
  return 2 ** Math.ceil(Math.log2(bytes));
}
