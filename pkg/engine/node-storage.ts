import { constants as fsc } from "node:fs";
import { mkdir, open, rename, rm, stat, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import type { Storage, StorageFile } from "./storage.js";

/** Storage on a real directory through Node's fs (libuv thread pool, positional I/O). */
export class NodeStorage implements Storage {
  readonly location: string;

  constructor(dir: string) {
    this.location = dir;
  }

  static async create(dir: string): Promise<NodeStorage> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return new NodeStorage(dir);
  }

  async open(name: string, options: { create: boolean }): Promise<StorageFile> {
    const flags = fsc.O_RDWR | (options.create ? fsc.O_CREAT : 0);
    const handle = await open(join(this.location, name), flags, 0o600);
    return new NodeFile(handle);
  }

  async exists(name: string): Promise<boolean> {
    try {
      await stat(join(this.location, name));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw err;
    }
  }

  async rename(from: string, to: string): Promise<void> {
    await rename(join(this.location, from), join(this.location, to));
  }

  async remove(name: string): Promise<void> {
    await rm(join(this.location, name), { force: true });
  }

  async syncDir(): Promise<void> {
    const dir = await open(this.location, fsc.O_RDONLY | fsc.O_DIRECTORY);
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }
}

class NodeFile implements StorageFile {
  constructor(private readonly handle: FileHandle) {}

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
function skipBytes(buffers: Buffer[], n: number): Buffer[] {
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
