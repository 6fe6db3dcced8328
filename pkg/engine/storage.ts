/**
 * The engine's only door to persistent storage. Everything the engine keeps (superblock, data
 * area, checkpoint, journal) goes through these two interfaces, so a fault-injecting
 * implementation can simulate a power loss at any I/O instant (see fault-storage.ts).
 *
 * Semantics follow POSIX as ext4/xfs provide it: a write is durable only after `sync()` of its
 * file; a create, rename or remove is durable only after `syncDir()`.
 */
export interface StorageFile {
  /** Reads up to `length` bytes at `position` into `buffer` at `bufferOffset`; returns bytes read. */
  read(buffer: Buffer, bufferOffset: number, length: number, position: number): Promise<number>;
  /** Writes all of `buffers`, back to back, starting at `position`. */
  write(buffers: readonly Buffer[], position: number): Promise<void>;
  /**
   * Writes `buffers` at `position` before returning, on the calling thread, when this file does
   * such writes inline (small writes through the page cache); returns false, having written
   * nothing, when it does not. Throws what the write throws. Optional: storage without it always
   * takes the asynchronous `write`.
   */
  writeNow?(buffers: readonly Buffer[], position: number): boolean;
  /**
   * Reads like `read` (up to `length` bytes; fewer only at the file's end) before returning, on
   * the calling thread, when this file does such reads inline now; undefined, having read
   * nothing, when it does not. Throws what the read throws. Optional, like writeNow.
   */
  readNow?(buffer: Buffer, bufferOffset: number, length: number, position: number): number | undefined;
  /** Makes every completed write to this file durable (fdatasync). */
  sync(): Promise<void>;
  size(): Promise<number>;
  truncate(length: number): Promise<void>;
  close(): Promise<void>;
}

export interface StorageOpenOptions {
  create: boolean;
  /**
   * The pool's data file: bulk block I/O the engine aligns to 4 KiB where it can, which storage
   * may serve without the page cache (NodeStorage's "direct" data I/O).
   */
  bulk?: boolean;
}

export interface Storage {
  /** A human-readable location for messages (the pool directory). */
  readonly location: string;
  open(name: string, options: StorageOpenOptions): Promise<StorageFile>;
  exists(name: string): Promise<boolean>;
  rename(from: string, to: string): Promise<void>;
  remove(name: string): Promise<void>;
  /** Makes creates, renames and removes in the directory durable (fsync of the directory). */
  syncDir(): Promise<void>;
  /**
   * Takes the pool's exclusive lock (one process at a time may open a pool), returning its
   * release. Storage that cannot be shared between processes need not implement it.
   */
  lock?(): Promise<() => Promise<void>>;
}

/** Reads exactly `length` bytes or fails: metadata files are never read short on purpose. */
export async function readFully(file: StorageFile, position: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = await file.read(buf, done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done === length ? buf : buf.subarray(0, done);
}
