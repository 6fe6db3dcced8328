import type { FileHandle } from "node:fs/promises";
import type { StorageFile } from "./storage.js";

/** A file through Node's FileHandle: every call a thread-pool request (libuv). */
export class NodeFile implements StorageFile {
  constructor(protected readonly handle: FileHandle) {}

  async read(buffer: Buffer, bufferOffset: number, length: number, position: number): Promise<number> {
    const { bytesRead } = await this.handle.read(buffer, bufferOffset, length, position);
    return bytesRead;
  }

  async write(buffers: readonly Buffer[], position: number): Promise<void> {
    let pos = position;
    let pending = buffers.filter((b) => b.length > 0);
    while (pending.length > 0) {
      const { bytesWritten } =
        pending.length === 1
          ? await this.handle.write(pending[0]!, 0, pending[0]!.length, pos)
          : await this.handle.writev(pending, pos);
      pos += bytesWritten;
      pending = skipBytes(pending, bytesWritten);
    }
  }

  async sync(): Promise<void> {
    await this.handle.datasync();
  }

  async size(): Promise<number> {
    return (await this.handle.stat()).size;
  }

  async truncate(length: number): Promise<void> {
    await this.handle.truncate(length);
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

/** Drops the first `n` bytes of a buffer list (a short positional write continues after them). */
export function skipBytes(buffers: Buffer[], n: number): Buffer[] {
  const out: Buffer[] = [];
  let skip = n;
  for (const b of buffers) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    out.push(skip > 0 ? b.subarray(skip) : b);
    skip = 0;
  }
  return out;
}

/**
 * Splits a positional write at every multiple of `cap` in the file, so that no piece is larger
 * than `cap` or crosses such a boundary. Returns the write itself when it fits.
 */
export function splitAtBoundaries(
  buffers: readonly Buffer[],
  position: number,
  cap: number,
): { position: number; buffers: Buffer[] }[] {
  let total = 0;
  for (const b of buffers) total += b.length;
  if (Math.floor(position / cap) === Math.floor((position + total - 1) / cap) || total === 0)
    return [{ position, buffers: [...buffers] }];
  const pieces: { position: number; buffers: Buffer[] }[] = [];
  let pos = position;
  let room = cap - (pos % cap);
  let piece: Buffer[] = [];
  for (let b of buffers) {
    while (b.length > 0) {
      const take = Math.min(room, b.length);
      piece.push(take === b.length ? b : b.subarray(0, take));
      b = b.subarray(take);
      room -= take;
      if (room === 0) {
        pieces.push({ position: pos, buffers: piece });
        pos += cap - (pos % cap);
        room = cap;
        piece = [];
      }
    }
  }
  if (piece.length > 0) pieces.push({ position: pos, buffers: piece });
  return pieces;
}
