import type { Duplex } from "node:stream";
import { SnapblockError } from "../errors/index.js";

export interface StreamReaderOptions {
  /**
   * Bytes buffered ahead of what the protocol code asked for before the stream is paused. This
   * is what turns "the server is busy" into TCP/unix-socket backpressure on the client.
   */
  highWaterMark: number;
}

/** Gives the buffer (exactly `bytes` long) a read fills; e.g. one from a BufferPool. */
export type Allocate = (bytes: number) => Buffer;

/** Reading exact byte counts from a connection (StreamReader, OwnedMemoryReader). */
export interface ByteReader {
  /** Bytes received and not yet consumed. */
  readonly bufferedBytes: number;
  /**
   * Resolves with exactly `bytes` bytes; rejects with SnapblockError CLOSED when the stream ends
   * first. `alloc`, when given, supplies the buffer when the bytes have to be copied into one.
   */
  readExact(bytes: number, alloc?: Allocate): Promise<Buffer>;
  /**
   * Exactly `bytes` bytes if they are already buffered, else undefined (nothing consumed): the
   * synchronous path for requests that arrived together, which skips a promise per read.
   */
  tryTake(bytes: number, alloc?: Allocate): Buffer | undefined;
  /** Consumes and drops `bytes` bytes without holding more than one socket read at a time. */
  discard(bytes: number): Promise<void>;
  stop(reason?: string): void;
}

/** `alloc(bytes)` (a fresh buffer without it), checked to be exactly `bytes` long. */
export function allocateExactly(alloc: Allocate | undefined, bytes: number): Buffer {
  const out = alloc === undefined ? Buffer.allocUnsafe(bytes) : alloc(bytes);
  if (out.length !== bytes) {
    throw new SnapblockError("INTERNAL", `allocator gave ${out.length} bytes for a read of ${bytes}`);
  }
  return out;
}

interface Waiter {
  bytes: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * Pull-style reading of exact byte counts from a socket, with bounded buffering: the stream is
 * paused whenever more than max(highWaterMark, bytes currently awaited) is buffered, so memory
 * per connection never exceeds what the protocol code is prepared to accept.
 */
export class StreamReader implements ByteReader {
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: Waiter | undefined;
  /** Set when no more bytes will come; what is buffered can still be read (a client may half-close). */
  private endedError: SnapblockError | undefined;
  /** Set when reading is over for good; buffered bytes are gone. */
  private closedError: SnapblockError | undefined;
  private paused = false;
  private readonly onData = (chunk: Buffer): void => this.push(chunk);
  private readonly onEnd = (): void => this.end("the client closed the connection");
  private readonly onClose = (): void => this.end("the connection closed");
  private readonly onError = (err: Error): void => this.close(`connection error: ${err.message}`);

  constructor(
    private readonly stream: Duplex,
    private readonly options: StreamReaderOptions,
  ) {
    stream.on("data", this.onData);
    stream.on("end", this.onEnd);
    stream.on("close", this.onClose);
    stream.on("error", this.onError);
  }

  get bufferedBytes(): number {
    return this.buffered;
  }

  async readExact(bytes: number, alloc?: Allocate): Promise<Buffer> {
    while (this.buffered < bytes) {
      await this.waitFor(bytes);
    }
    return this.take(bytes, alloc);
  }

  tryTake(bytes: number, alloc?: Allocate): Buffer | undefined {
    return this.buffered >= bytes && this.closedError === undefined ? this.take(bytes, alloc) : undefined;
  }

  async discard(bytes: number): Promise<void> {
    let remaining = bytes;
    while (remaining > 0) {
      if (this.buffered === 0) await this.waitFor(1);
      const step = Math.min(remaining, this.buffered);
      this.drop(step);
      remaining -= step;
    }
  }

  stop(reason = "reading stopped"): void {
    this.close(reason);
    this.stream.off("data", this.onData);
    this.stream.off("end", this.onEnd);
    this.stream.off("close", this.onClose);
    // The error listener stays: an unhandled 'error' event would crash the process.
  }

  private waitFor(bytes: number): Promise<void> {
    const over = this.closedError ?? this.endedError;
    if (over !== undefined) return Promise.reject(over);
    if (this.waiter !== undefined) {
      return Promise.reject(new SnapblockError("INTERNAL", "StreamReader supports one reader at a time"));
    }
    return new Promise<void>((resolve, reject) => {
      this.waiter = { bytes, resolve, reject };
      if (this.paused) {
        this.paused = false;
        this.stream.resume();
      }
    });
  }

  private push(chunk: Buffer): void {
    if (this.closedError !== undefined || this.endedError !== undefined) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const waiter = this.waiter;
    if (waiter !== undefined && this.buffered >= waiter.bytes) {
      this.waiter = undefined;
      waiter.resolve();
    }
    const wanted = this.waiter?.bytes ?? 0;
    if (!this.paused && this.buffered >= Math.max(this.options.highWaterMark, wanted)) {
      this.paused = true;
      this.stream.pause();
    }
  }

  private take(bytes: number, alloc?: Allocate): Buffer {
    const first = this.chunks[0];
    if (first !== undefined && first.length >= bytes) {
      this.drop(bytes);
      return first.subarray(0, bytes);
    }
    const out = allocateExactly(alloc, bytes);
    let filled = 0;
    while (filled < bytes) {
      const chunk = this.chunks[0];
      if (chunk === undefined) throw new SnapblockError("INTERNAL", "StreamReader buffer underflow");
      const step = Math.min(chunk.length, bytes - filled);
      chunk.copy(out, filled, 0, step);
      this.drop(step);
      filled += step;
    }
    return out;
  }

  private drop(bytes: number): void {
    let remaining = bytes;
    while (remaining > 0) {
      const chunk = this.chunks[0];
      if (chunk === undefined) throw new SnapblockError("INTERNAL", "StreamReader buffer underflow");
      if (chunk.length <= remaining) {
        this.chunks.shift();
        remaining -= chunk.length;
      } else {
        this.chunks[0] = chunk.subarray(remaining);
        remaining = 0;
      }
    }
    this.buffered -= bytes;
  }

  private end(reason: string): void {
    if (this.endedError !== undefined) return;
    this.endedError = new SnapblockError("CLOSED", reason);
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(this.endedError);
  }

  private close(reason: string): void {
    if (this.closedError !== undefined) return;
    this.closedError = new SnapblockError("CLOSED", reason);
    this.chunks.length = 0;
    this.buffered = 0;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(this.closedError);
  }
}
