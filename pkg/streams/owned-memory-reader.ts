import net from "node:net";
import type { Duplex } from "node:stream";
import tls from "node:tls";
import { SnapblockError } from "../errors/index.js";
import type { Allocate, ByteReader, StreamReaderOptions } from "./stream-reader.js";
import { allocateExactly, StreamReader } from "./stream-reader.js";

/** The least room lent to the socket for one read into the staging buffer. */
const MIN_READ = 64 * 1024;

interface Waiter {
  bytes: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

/** A read whose destination is known: the socket reads straight into it once the stage is empty. */
interface DirectRead {
  dst: Buffer;
  filled: number;
  resolve: (data: Buffer) => void;
  reject: (err: Error) => void;
}

/**
 * A ByteReader that owns the memory its socket reads into (Node.js's `onread` with a buffer
 * function): bytes land in one staging buffer reused for the connection's life, or, for a read
 * whose size is known (a write request's payload), straight in its destination. Node.js's default
 * reading allocates a fresh 64 KiB buffer per socket read; at hundreds of MiB/s that garbage drives
 * V8's major collections and, on a VM that hands freed memory back to its host, page faults.
 *
 * Only the lend step (called by Node.js between reads, when no region is lent) moves bytes within
 * the stage; consumers only advance `head`. Bytes handed out are always copies the caller owns.
 */
export class OwnedMemoryReader implements ByteReader {
  private stage: Buffer;
  private head = 0;
  private tail = 0;
  /** Whether the region lent for the next socket read is the direct read's destination. */
  private lentDirect = false;
  private waiter: Waiter | undefined;
  private direct: DirectRead | undefined;
  private socket: net.Socket | undefined;
  private paused = false;
  private endedError: SnapblockError | undefined;
  private closedError: SnapblockError | undefined;
  private readonly onEnd = (): void => this.end("the client closed the connection");
  private readonly onClose = (): void => this.end("the connection closed");
  private readonly onError = (err: Error): void => this.close(`connection error: ${err.message}`);

  private constructor(private readonly options: StreamReaderOptions) {
    this.stage = Buffer.allocUnsafe(options.highWaterMark + MIN_READ);
  }

  /**
   * Takes over an accepted plain socket that has not started reading (a server created with
   * `pauseOnConnect`): a new net.Socket on the same handle reads into this reader's memory, and
   * the old object is retired without closing the connection. Undefined (nothing changed) for TLS
   * sockets, sockets already reading, or a Node.js without user-buffer reads; use openReader.
   */
  static adopt(
    socket: net.Socket,
    options: StreamReaderOptions,
  ): { reader: OwnedMemoryReader; socket: net.Socket } | undefined {
    const handle = (socket as unknown as { _handle?: { useUserBuffer?: unknown } | null })._handle;
    if (
      socket instanceof tls.TLSSocket ||
      socket.readableFlowing !== false ||
      socket.destroyed ||
      handle === undefined ||
      handle === null ||
      typeof handle.useUserBuffer !== "function"
    ) {
      return undefined;
    }
    const reader = new OwnedMemoryReader(options);
    // The retired object must not close the handle: detach it first (destroy() then only emits
    // 'close' and gives the server its connection count back).
    (socket as unknown as { _handle: unknown })._handle = null;
    socket.destroy();
    const own = new net.Socket({
      handle,
      allowHalfOpen: socket.allowHalfOpen,
      readable: true,
      writable: true,
      onread: {
        buffer: () => reader.lend(),
        callback: (bytes: number) => reader.received(bytes),
      },
    } as net.SocketConstructorOpts);
    reader.attach(own);
    return { reader, socket: own };
  }

  get bufferedBytes(): number {
    return this.tail - this.head + (this.direct?.filled ?? 0);
  }

  tryTake(bytes: number, alloc?: Allocate): Buffer | undefined {
    if (this.closedError !== undefined || this.direct !== undefined || this.tail - this.head < bytes) {
      return undefined;
    }
    const out = allocateExactly(alloc, bytes);
    this.stage.copy(out, 0, this.head, this.head + bytes);
    this.head += bytes;
    return out;
  }

  async readExact(bytes: number, alloc?: Allocate): Promise<Buffer> {
    const ready = this.tryTake(bytes, alloc);
    if (ready !== undefined) return ready;
    this.checkOpen();
    const dst = allocateExactly(alloc, bytes);
    const have = this.tail - this.head;
    this.stage.copy(dst, 0, this.head, this.tail);
    this.head = this.tail;
    return new Promise<Buffer>((resolve, reject) => {
      this.direct = { dst, filled: have, resolve, reject };
      this.resume();
    });
  }

  async discard(bytes: number): Promise<void> {
    let remaining = bytes;
    while (remaining > 0) {
      if (this.tail === this.head) await this.waitFor(1);
      const step = Math.min(remaining, this.tail - this.head);
      this.head += step;
      remaining -= step;
    }
  }

  stop(reason = "reading stopped"): void {
    this.close(reason);
    const socket = this.socket;
    if (socket === undefined) return;
    socket.pause();
    this.paused = true;
    socket.off("end", this.onEnd);
    socket.off("close", this.onClose);
    // The error listener stays: an unhandled 'error' event would crash the process.
  }

  private attach(socket: net.Socket): void {
    this.socket = socket;
    socket.on("end", this.onEnd);
    socket.on("close", this.onClose);
    socket.on("error", this.onError);
    // Bytes may have arrived while the socket was being built: pause now if they are enough.
    this.pauseIfFull();
  }

  /** Node.js asks where the next socket read goes; nothing is lent at this moment. */
  private lend(): Buffer {
    const direct = this.direct;
    if (direct !== undefined && this.head === this.tail) {
      this.lentDirect = true;
      return direct.dst.subarray(direct.filled);
    }
    this.lentDirect = false;
    if (this.head === this.tail) {
      this.head = 0;
      this.tail = 0;
    } else if (this.stage.length - this.tail < MIN_READ) {
      this.stage.copy(this.stage, 0, this.head, this.tail);
      this.tail -= this.head;
      this.head = 0;
    }
    if (this.stage.length - this.tail < MIN_READ) {
      // Only when more than the high-water mark arrived before the pause took effect.
      const bigger = Buffer.allocUnsafe(this.tail + MIN_READ);
      this.stage.copy(bigger, 0, 0, this.tail);
      this.stage = bigger;
    }
    return this.stage.subarray(this.tail);
  }

  /** `bytes` arrived in the region lent last. */
  private received(bytes: number): boolean {
    const direct = this.direct;
    if (this.lentDirect) {
      // A direct read cancelled while its region was lent: those bytes belong to nobody.
      if (direct === undefined) return true;
      direct.filled += bytes;
    } else {
      this.tail += bytes;
      if (direct !== undefined) {
        const step = Math.min(this.tail - this.head, direct.dst.length - direct.filled);
        this.stage.copy(direct.dst, direct.filled, this.head, this.head + step);
        this.head += step;
        direct.filled += step;
      }
    }
    if (this.closedError !== undefined || this.endedError !== undefined) {
      this.head = this.tail;
      return true;
    }
    if (direct !== undefined && direct.filled === direct.dst.length) {
      this.direct = undefined;
      direct.resolve(direct.dst);
    }
    const waiter = this.waiter;
    if (waiter !== undefined && this.tail - this.head >= waiter.bytes) {
      this.waiter = undefined;
      waiter.resolve();
    }
    this.pauseIfFull();
    return true;
  }

  private pauseIfFull(): void {
    if (this.paused || this.socket === undefined || this.direct !== undefined) return;
    const wanted = this.waiter?.bytes ?? 0;
    if (this.tail - this.head >= Math.max(this.options.highWaterMark, wanted)) {
      this.paused = true;
      this.socket.pause();
    }
  }

  private resume(): void {
    if (!this.paused || this.socket === undefined) return;
    this.paused = false;
    this.socket.resume();
  }

  private checkOpen(): void {
    const over = this.closedError ?? this.endedError;
    if (over !== undefined) throw over;
    if (this.waiter !== undefined || this.direct !== undefined) {
      throw new SnapblockError("INTERNAL", "StreamReader supports one reader at a time");
    }
  }

  private async waitFor(bytes: number): Promise<void> {
    this.checkOpen();
    return new Promise<void>((resolve, reject) => {
      this.waiter = { bytes, resolve, reject };
      this.resume();
    });
  }

  private end(reason: string): void {
    if (this.endedError !== undefined) return;
    this.endedError = new SnapblockError("CLOSED", reason);
    this.failPending(this.endedError);
  }

  private close(reason: string): void {
    if (this.closedError !== undefined) return;
    this.closedError = new SnapblockError("CLOSED", reason);
    this.head = this.tail;
    this.failPending(this.closedError);
  }

  private failPending(err: SnapblockError): void {
    const { waiter, direct } = this;
    this.waiter = undefined;
    this.direct = undefined;
    waiter?.reject(err);
    direct?.reject(err);
  }
}

/**
 * The reader for a connection's stream: an OwnedMemoryReader when the stream is an accepted plain
 * socket not yet reading, else a StreamReader on the stream as it is (which is resumed if it was
 * accepted paused). Use the returned stream for everything else: adoption replaces the socket.
 */
export function openReader(
  stream: Duplex,
  options: StreamReaderOptions,
): { reader: ByteReader; stream: Duplex } {
  if (stream instanceof net.Socket) {
    const adopted = OwnedMemoryReader.adopt(stream, options);
    if (adopted !== undefined) return { reader: adopted.reader, stream: adopted.socket };
  }
  const reader = new StreamReader(stream, options);
  if (stream.readableFlowing === false) stream.resume();
  return { reader, stream };
}
