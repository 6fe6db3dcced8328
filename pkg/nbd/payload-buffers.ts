/**
 * Reused buffers for the payloads of large NBD writes. A payload that spans several socket reads
 * is joined into one buffer; a fresh buffer per request (a MiB of new memory per MiB written)
 * kept V8's major garbage collector busy, about 30 % of the server's CPU under sequential writes
 * (BENCHMARKS.md). Buffers are handed out by power-of-two size and given back once the request's
 * reply is sent; at most `maxIdleBytes` wait idle, the rest are left to the garbage collector.
 *
 * Safe because a backend reads a write's data only until its promise settles (NbdBackend.write).
 */
export class PayloadBuffers {
  private readonly free = new Map<number, Buffer[]>();
  private idle = 0;

  constructor(
    private readonly maxIdleBytes = 16 * 1024 * 1024,
    /** Payloads up to this size are served as views of the socket's chunks: no buffer needed. */
    private readonly minBytes = 64 * 1024,
  ) {}

  /** Bytes waiting idle (for tests and metrics). */
  get idleBytes(): number {
    return this.idle;
  }

  /** A buffer of at least `length` bytes, or undefined for a payload too small to need one. */
  take(length: number): Buffer | undefined {
    if (length <= this.minBytes) return undefined;
    const size = 2 ** Math.ceil(Math.log2(length));
    const reused = this.free.get(size)?.pop();
    if (reused !== undefined) {
      this.idle -= size;
      return reused;
    }
    return Buffer.allocUnsafeSlow(size);
  }

  /** Takes back a buffer from `take` whose contents nobody will read again. */
  give(buffer: Buffer): void {
    if (this.idle + buffer.length > this.maxIdleBytes) return;
    const list = this.free.get(buffer.length);
    if (list === undefined) this.free.set(buffer.length, [buffer]);
    else list.push(buffer);
    this.idle += buffer.length;
  }
}
