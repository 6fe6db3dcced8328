import type { FileHandle } from "node:fs/promises";
import { DIRECT_ALIGN, type AlignedBuffers } from "./aligned-buffers.js";
import { NodeFile } from "./node-file.js";

/**
 * The pool's data file opened O_DIRECT: reads and writes go between the disk and aligned
 * memory, with no page cache.
 *
 * Why: volumes carry a filesystem or a database that caches on its own side of the block device,
 * so a second copy of the same pages in the node's page cache is memory spent twice, and its
 * dirty pages are flushed in storms that stall `fdatasync` (the commit) behind gigabytes of
 * writeback. Worse on current kernels: ext4 caches large writes in large folios, and a 4 KiB
 * write into one walks every block of the folio (ext4_block_write_begin took 42% of the server's
 * CPU under 4 KiB random writes after a sequential fill; BENCHMARKS.md). The peers this is
 * measured against (qemu-nbd cache=none, the raw O_DIRECT file) make the same choice.
 *
 * Costs: every request is a disk access (reads no longer come from the cache), so requests run
 * on libuv's thread pool (or io_uring) where several overlap; and data passes through an aligned
 * bounce buffer, one memory copy each way (the copy the page cache made before, now in user
 * space). A request that does not start and end on a 4 KiB boundary reads the edge blocks first
 * and writes whole blocks (read-modify-write). That needs no lock here: the engine never writes
 * one 4 KiB block from two requests at once (writes hold their chunk's lock, and chunks are
 * whole blocks).
 *
 * Durability is unchanged: a completed direct write may still sit in the device's volatile
 * cache and the file's block allocation in the filesystem's journal, so the commit's `fdatasync`
 * stays exactly where it was.
 */
export class DirectFile extends NodeFile {
  constructor(
    handle: FileHandle,
    private readonly buffers: AlignedBuffers,
  ) {
    super(handle);
  }

  override async read(
    buffer: Buffer,
    bufferOffset: number,
    length: number,
    position: number,
  ): Promise<number> {
    if (length === 0) return 0;
    const start = alignDown(position);
    const end = alignUp(position + length);
    const bounce = await this.buffers.take(end - start);
    try {
      const got = await this.readInto(bounce, start);
      const from = position - start;
      const n = Math.max(0, Math.min(length, got - from));
      bounce.copy(buffer, bufferOffset, from, from + n);
      return n;
    } finally {
      this.buffers.give(bounce);
    }
  }

  override async write(buffers: readonly Buffer[], position: number): Promise<void> {
    let total = 0;
    for (const b of buffers) total += b.length;
    if (total === 0) return;
    const start = alignDown(position);
    const end = alignUp(position + total);
    const bounce = await this.buffers.take(end - start);
    try {
      // Edge blocks the write covers in part keep the rest of their content.
      if (position > start) await this.readBlock(bounce, 0, start);
      const tail = end - DIRECT_ALIGN;
      if (position + total < end && (tail > start || position === start)) {
        await this.readBlock(bounce, tail - start, tail);
      }
      let at = position - start;
      for (const b of buffers) at += b.copy(bounce, at);
      await this.writeAll(bounce, start);
    } finally {
      this.buffers.give(bounce);
    }
  }

  // sync, size, truncate and close as NodeFile: fdatasync, fstat, ftruncate, close of the handle.

  /** Reads from aligned `position` until `into` is full or the file ends; returns bytes read. */
  private async readInto(into: Buffer, position: number): Promise<number> {
    let got = 0;
    while (got < into.length) {
      const { bytesRead } = await this.handle.read(into, got, into.length - got, position + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return got;
  }

  /** One block at aligned `position` into `into` at `at`; zeroes past the end of the file. */
  private async readBlock(into: Buffer, at: number, position: number): Promise<void> {
    const block = into.subarray(at, at + DIRECT_ALIGN);
    const got = await this.readInto(block, position);
    block.fill(0, got);
  }

  private async writeAll(from: Buffer, position: number): Promise<void> {
    let done = 0;
    while (done < from.length) {
      const { bytesWritten } = await this.handle.write(from, done, from.length - done, position + done);
      done += bytesWritten;
    }
  }
}

function alignDown(n: number): number {
  return n - (n % DIRECT_ALIGN);
}

function alignUp(n: number): number {
  return alignDown(n + DIRECT_ALIGN - 1);
}
