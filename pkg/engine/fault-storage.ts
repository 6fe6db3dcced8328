import { Prng } from "./prng.js";
import type { Storage, StorageFile } from "./storage.js";

/**
 * An in-memory Storage that simulates power loss. It keeps, for every file, what is durable (made
 * so by sync) and what is only in the "page cache"; for the directory, which creates, renames and
 * removes were made durable by syncDir. When the armed crash point is reached, it computes the
 * image a machine would find after losing power at that instant and refuses all further I/O:
 *
 * - each unsynced write survives or not, independently, as the sector-aligned image it left in the
 *   page cache, and a surviving write may be torn at 512-byte sector boundaries (sectors survive
 *   independently, as on a disk without atomic multi-sector writes);
 * - an unsynced truncate survives or not;
 * - unsynced directory operations survive as a prefix, in order (a journaling file system commits
 *   its metadata operations in order).
 *
 * This is a test instrument for the engine's durability contract, not a storage backend.
 */
export class PowerLossError extends Error {
  override readonly name = "PowerLossError";
  constructor() {
    super("simulated power loss: storage is gone");
  }
}

/** The durable state found after a crash: file name -> contents. */
export type FaultImage = Map<string, Buffer>;

const SECTOR = 512;

type PendingOp = { kind: "write"; position: number; data: Buffer } | { kind: "truncate"; size: number };
type DirOp =
  | { kind: "link"; name: string; inode: Inode }
  | { kind: "unlink"; name: string }
  | { kind: "rename"; from: string; to: string };

class Inode {
  current: Buffer;
  size: number;
  durable: Buffer;
  pending: PendingOp[] = [];

  constructor(contents: Buffer) {
    this.durable = Buffer.from(contents);
    this.current = Buffer.from(contents);
    this.size = contents.length;
  }

  ensureCapacity(n: number): void {
    if (n <= this.current.length) return;
    const next = Buffer.alloc(Math.max(n, this.current.length * 2));
    this.current.copy(next, 0, 0, this.size);
    this.current = next;
  }
}

export interface FaultStorageOptions {
  seed?: number;
  /** Start from the image found after an earlier crash. */
  image?: FaultImage;
  /** Probability that an unsynced write or truncate survives the crash (default 0.5). */
  survival?: number;
}

export class FaultStorage implements Storage {
  readonly location = "fault-storage:";
  private entries = new Map<string, Inode>();
  private durableEntries = new Map<string, Inode>();
  private dirPending: DirOp[] = [];
  private readonly rng: Prng;
  private readonly survival: number;
  private countdown = Infinity;
  private crashImage: FaultImage | undefined;
  /** Mutating operations performed so far: tests pick crash points in [0, mutatingOps). */
  mutatingOps = 0;

  constructor(options: FaultStorageOptions = {}) {
    this.rng = new Prng(options.seed ?? 1);
    this.survival = options.survival ?? 0.5;
    for (const [name, contents] of options.image ?? []) {
      const inode = new Inode(contents);
      this.entries.set(name, inode);
      this.durableEntries.set(name, inode);
    }
  }

  get crashed(): boolean {
    return this.crashImage !== undefined;
  }

  /** Arms a crash: the `n`-th mutating operation from now never happens; power is lost instead. */
  crashAfter(n: number): void {
    this.countdown = n;
  }

  /** Loses power now and returns the image a reboot would find. */
  crashNow(): FaultImage {
    this.crashImage ??= this.computeImage();
    return this.crashImage;
  }

  /** The image after the crash; throws if no crash happened. */
  image(): FaultImage {
    if (!this.crashImage) throw new Error("no crash has happened");
    return this.crashImage;
  }

  /** Every file's current contents, as if everything had been synced (for a clean shutdown). */
  snapshot(): FaultImage {
    const out: FaultImage = new Map();
    for (const [name, inode] of this.entries)
      out.set(name, Buffer.from(inode.current.subarray(0, inode.size)));
    return out;
  }

  /** Counts a mutating operation, crashing instead of performing it when the countdown ends. */
  private mutate(): void {
    this.alive();
    this.mutatingOps++;
    if (--this.countdown < 0) {
      this.crashNow();
      throw new PowerLossError();
    }
  }

  private alive(): void {
    if (this.crashImage) throw new PowerLossError();
  }

  private computeImage(): FaultImage {
    const entries = new Map(this.durableEntries);
    const survivingDirOps = this.rng.int(this.dirPending.length + 1);
    for (const op of this.dirPending.slice(0, survivingDirOps)) {
      if (op.kind === "link") entries.set(op.name, op.inode);
      else if (op.kind === "unlink") entries.delete(op.name);
      else {
        const inode = entries.get(op.from);
        entries.delete(op.from);
        if (inode) entries.set(op.to, inode);
        else entries.delete(op.to);
      }
    }
    const image: FaultImage = new Map();
    const done = new Map<Inode, Buffer>();
    for (const [name, inode] of entries) {
      let contents = done.get(inode);
      if (!contents) {
        contents = this.survivingContents(inode);
        done.set(inode, contents);
      }
      image.set(name, contents);
    }
    return image;
  }

  private survivingContents(inode: Inode): Buffer {
    let buf = Buffer.from(inode.durable);
    for (const op of inode.pending) {
      if (!this.rng.chance(this.survival)) continue;
      if (op.kind === "truncate") {
        const next = Buffer.alloc(op.size);
        buf.copy(next, 0, 0, Math.min(op.size, buf.length));
        buf = next;
        continue;
      }
      const end = op.position + op.data.length;
      if (end > buf.length) {
        const next = Buffer.alloc(end);
        buf.copy(next);
        buf = next;
      }
      // Tear at sector boundaries: each sector-aligned piece survives on its own.
      let pos = op.position;
      while (pos < end) {
        const pieceEnd = Math.min(end, (Math.floor(pos / SECTOR) + 1) * SECTOR);
        if (this.rng.chance(0.85)) op.data.copy(buf, pos, pos - op.position, pieceEnd - op.position);
        pos = pieceEnd;
      }
    }
    return buf;
  }

  async open(name: string, options: { create: boolean }): Promise<StorageFile> {
    await Promise.resolve();
    this.alive();
    let inode = this.entries.get(name);
    if (!inode) {
      if (!options.create) {
        throw Object.assign(new Error(`ENOENT: no such file '${name}'`), { code: "ENOENT" });
      }
      this.mutate();
      inode = new Inode(Buffer.alloc(0));
      this.entries.set(name, inode);
      this.dirPending.push({ kind: "link", name, inode });
    }
    return new FaultFile(this, inode);
  }

  async exists(name: string): Promise<boolean> {
    await Promise.resolve();
    this.alive();
    return this.entries.has(name);
  }

  async rename(from: string, to: string): Promise<void> {
    await Promise.resolve();
    this.mutate();
    const inode = this.entries.get(from);
    if (!inode) throw Object.assign(new Error(`ENOENT: no such file '${from}'`), { code: "ENOENT" });
    this.entries.delete(from);
    this.entries.set(to, inode);
    this.dirPending.push({ kind: "rename", from, to });
  }

  async remove(name: string): Promise<void> {
    await Promise.resolve();
    this.mutate();
    if (this.entries.delete(name)) this.dirPending.push({ kind: "unlink", name });
  }

  async syncDir(): Promise<void> {
    await Promise.resolve();
    this.mutate();
    this.durableEntries = new Map(this.entries);
    this.dirPending = [];
  }

  /** @internal used by FaultFile */
  fileRead(inode: Inode, buffer: Buffer, bufferOffset: number, length: number, position: number): number {
    this.alive();
    const end = Math.min(inode.size, position + length);
    if (end <= position) return 0;
    inode.current.copy(buffer, bufferOffset, position, end);
    return end - position;
  }

  /** @internal */
  fileWrite(inode: Inode, buffers: readonly Buffer[], position: number): void {
    this.mutate();
    const data = buffers.length === 1 ? Buffer.from(buffers[0]!) : Buffer.concat(buffers);
    const end = position + data.length;
    inode.ensureCapacity(end);
    if (position > inode.size) inode.current.fill(0, inode.size, position);
    data.copy(inode.current, position);
    inode.size = Math.max(inode.size, end);
    // A disk persists whole sectors of what the page cache holds, so what may survive is the
    // sector-aligned image after this write, not the write's own bytes: a sector then always
    // holds one of the states it went through, never a mix of two writes' bytes.
    const from = Math.floor(position / SECTOR) * SECTOR;
    const to = Math.min(inode.size, Math.ceil(end / SECTOR) * SECTOR);
    inode.pending.push({
      kind: "write",
      position: from,
      data: Buffer.from(inode.current.subarray(from, to)),
    });
  }

  /** @internal */
  fileSync(inode: Inode): void {
    this.mutate();
    inode.durable = Buffer.from(inode.current.subarray(0, inode.size));
    inode.pending = [];
  }

  /** @internal */
  fileTruncate(inode: Inode, size: number): void {
    this.mutate();
    inode.ensureCapacity(size);
    if (size > inode.size) inode.current.fill(0, inode.size, size);
    inode.size = size;
    inode.pending.push({ kind: "truncate", size });
  }

  /** @internal */
  fileSize(inode: Inode): number {
    this.alive();
    return inode.size;
  }
}

class FaultFile implements StorageFile {
  constructor(
    private readonly fs: FaultStorage,
    private readonly inode: Inode,
  ) {}

  async read(buffer: Buffer, bufferOffset: number, length: number, position: number): Promise<number> {
    await Promise.resolve();
    return this.fs.fileRead(this.inode, buffer, bufferOffset, length, position);
  }

  async write(buffers: readonly Buffer[], position: number): Promise<void> {
    await Promise.resolve();
    this.fs.fileWrite(this.inode, buffers, position);
  }

  /** The inline write the data path's fast paths use, so power loss reaches them too. */
  writeNow(buffers: readonly Buffer[], position: number): boolean {
    this.fs.fileWrite(this.inode, buffers, position);
    return true;
  }

  /** The inline read the data path's fast paths use. */
  readNow(buffer: Buffer, bufferOffset: number, length: number, position: number): number {
    return this.fs.fileRead(this.inode, buffer, bufferOffset, length, position);
  }

  async sync(): Promise<void> {
    await Promise.resolve();
    this.fs.fileSync(this.inode);
  }

  async size(): Promise<number> {
    await Promise.resolve();
    return this.fs.fileSize(this.inode);
  }

  async truncate(length: number): Promise<void> {
    await Promise.resolve();
    this.fs.fileTruncate(this.inode, length);
  }

  async close(): Promise<void> {
    await Promise.resolve();
  }
}
