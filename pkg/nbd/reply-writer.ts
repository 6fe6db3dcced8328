import type { Duplex } from "node:stream";

/**
 * Writes whole protocol messages to the socket. Each send() queues all frames of one message in
 * a single synchronous step, so messages of concurrently completing requests never interleave on
 * the wire (proto.md "Transmission": chunks of different replies may interleave, but each
 * message is contiguous).
 */
export class ReplyWriter {
  private corked = false;

  constructor(private readonly stream: Duplex) {}

  /** False once the socket can no longer carry replies (closed by either side). */
  get open(): boolean {
    return !this.stream.destroyed && !this.stream.writableEnded;
  }

  /** Bytes queued in the socket that the client has not yet taken. */
  get queuedBytes(): number {
    return this.stream.writableLength;
  }

  /**
   * Queues one message; returns false (and drops it) when the socket is gone. `sent`, if given,
   * runs once the socket no longer needs the frames' memory (written out, or dropped).
   */
  send(frames: readonly Buffer[], sent?: () => void): boolean {
    if (!this.open) {
      sent?.();
      return false;
    }
    // Replies of requests that complete in the same turn of the event loop leave in one writev:
    // the socket is corked at the first and uncorked once the turn's callbacks and promise jobs
    // have run (a nextTick queued from a promise job runs after the job queue drains). That is
    // one syscall for a burst of replies instead of one each, with no added wait.
    if (!this.corked) {
      this.corked = true;
      this.stream.cork();
      process.nextTick(() => {
        this.corked = false;
        this.stream.uncork();
      });
    }
    // Write callbacks run in order, so the last frame's says the whole message is done.
    let last = frames.length - 1;
    while (last >= 0 && frames[last]!.length === 0) last--;
    for (let i = 0; i < last; i++) if (frames[i]!.length > 0) this.stream.write(frames[i]);
    if (last < 0) sent?.();
    else if (sent === undefined) this.stream.write(frames[last]);
    else this.stream.write(frames[last], () => sent());
    return true;
  }

  /** Resolves once at most `limit` bytes are queued, or the socket is gone. */
  waitForDrain(limit: number): Promise<void> {
    if (!this.open || this.stream.writableLength <= limit) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = (): void => {
        if (this.open && this.stream.writableLength > limit) return;
        this.stream.off("drain", done);
        this.stream.off("close", done);
        resolve();
      };
      this.stream.on("drain", done);
      this.stream.on("close", done);
    });
  }

  /**
   * Sends what is queued, then closes the socket in both directions. A client that does not take
   * its last replies within `graceMs` is cut off, so a close never hangs.
   */
  close(graceMs = 5_000): Promise<void> {
    const stream = this.stream;
    if (stream.destroyed) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => stream.destroy(), graceMs);
      stream.once("close", () => {
        clearTimeout(timer);
        resolve();
      });
      if (stream.writableEnded) {
        stream.destroy();
        return;
      }
      stream.end(() => stream.destroy());
    });
  }

  /** Closes at once, dropping anything queued (a hard disconnect). */
  destroy(): void {
    this.stream.destroy();
  }
}
