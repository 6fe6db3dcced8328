import { constants as fsc } from "node:fs";
import { mkdir, open, readFile, rename, rm, stat, writeFile, type FileHandle } from "node:fs/promises";
import { join, resolve } from "node:path";
import { SnapblockError } from "../errors/index.js";
import type { Storage, StorageFile } from "./storage.js";

/** Lock files this process holds: a second open of the same pool in one process is refused too. */
const heldLocks = new Set<string>();

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

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

  /**
   * A lock file holding the owner's pid, created with O_EXCL. A lock left by a process that no
   * longer exists (killed, crashed) is taken over; one held by a live process is refused.
   */
  async lock(): Promise<() => Promise<void>> {
    const path = resolve(this.location, "lock");
    if (heldLocks.has(path)) {
      throw new SnapblockError("BUSY", `pool at ${this.location} is already open in this process`);
    }
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await writeFile(path, `${process.pid}\n`, { flag: "wx", mode: 0o600 });
        heldLocks.add(path);
        return async () => {
          heldLocks.delete(path);
          await rm(path, { force: true });
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
      const owner = Number((await readFile(path, "utf8").catch(() => "")).trim());
      if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && processExists(owner)) {
        throw new SnapblockError(
          "BUSY",
          `pool at ${this.location} is in use by process ${owner}; stop it first (or remove ${path} if that process is not snapblock)`,
        );
      }
      await rm(path, { force: true }); // stale: its owner is gone
    }
    throw new SnapblockError("BUSY", `could not take the lock ${path}`);
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
