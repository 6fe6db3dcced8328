import { SnapblockError, asSnapblockError } from "../errors/index.js";
import type { Device } from "./metadata.js";
import type { PoolCore } from "./pool-core.js";
import { BLOCK, allSet, bitSet, setBits } from "./chunk-space.js";
import { RecordType, type MetaRecord } from "./records.js";
import type { Extent } from "./types.js";

/** How one chunk's share of a write is carried out. */
type Mode =
  /** The device owns the chunk: overwrite in place. */
  | "inPlace"
  /** The device owns a partial chunk: write its blocks in place, mark them valid. */
  | "inPlacePartial"
  /** Redirect, whole chunk written: a plain remap. */
  | "full"
  /** Redirect of a partial chunk: read its whole content, merge, write a complete chunk. */
  | "merge"
  /**
   * Redirect of part of a partial chunk (it became shared: a snapshot after the one it was made
   * for): a new partial chunk with the same backing, holding the blocks the old one held itself
   * (copied) and the blocks written. Backing chains stay one deep.
   */
  | "partialOver"
  /** Redirect of part of a chunk: write only the touched blocks to a new partial chunk. */
  | "partialNew";

interface Piece {
  chunk: number;
  /** Byte range inside the chunk. */
  start: number;
  end: number;
  /** Offset of this piece in the request's buffer. */
  bufOffset: number;
  /** Physical chunk currently mapped (-1: hole). */
  phys: number;
  mode: Mode;
  /** New chunk for a redirected write. */
  target: number;
}

/** Whether a piece goes to a newly reserved chunk (any mode but the two in-place ones). */
function redirects(p: Piece): boolean {
  return p.mode !== "inPlace" && p.mode !== "inPlacePartial";
}

/**
 * Whether a write of bytes [start, end) of a chunk, with the chunk's own blocks `valid`, leaves no
 * block to its backing: then the redirect writes a complete chunk (merge) instead of a partial.
 */
function coversRest(valid: Uint8Array, start: number, end: number, cs: number): boolean {
  const b0 = Math.floor(start / BLOCK);
  const b1 = Math.ceil(end / BLOCK);
  for (let b = 0; b < cs / BLOCK; b++) if ((b < b0 || b >= b1) && !bitSet(valid, b)) return false;
  return true;
}

/** Whether the caller holds the physical lock of the partial chunk with this lock key. */
type HoldsLock = (physKey: number) => boolean;
const NO_LOCKED_PARTIALS: HoldsLock = () => false;

/** The runs of set bits of a chunk's block bitmap, as [first, end) block pairs, in order. */
function* blockRuns(valid: Uint8Array, blocks: number): Generator<[number, number]> {
  for (let next = 0; next < blocks;) {
    if (!bitSet(valid, next)) {
      next++;
      continue;
    }
    let end = next + 1;
    while (end < blocks && bitSet(valid, end)) end++;
    yield [next, end];
    next = end;
  }
}

/** Logical chunk number -> lock key, unique per device. */
function lockKey(device: Device, chunk: number): number {
  return device.id * 2 ** 32 + chunk;
}

/** Physical chunk -> lock key (negative, apart from logical keys): serializes a partial chunk's fillers. */
function physKey(phys: number): number {
  return -1 - phys;
}

/**
 * The data path: byte-addressed reads and writes over chunk tables.
 *
 * Writes to a chunk the device owns exclusively (and durably) go in place. Writes to a shared
 * chunk or a hole go to a newly reserved chunk (redirect-on-write). A redirect covering the whole
 * chunk is a plain remap. A redirect covering part of it writes only the touched 4 KiB blocks and
 * makes the new chunk *partial*: its other blocks still read from the chunk it replaced (or as
 * zeroes for a hole), which it keeps referenced until the background filler completes it. So the
 * first write after a snapshot costs one small write, not a read and a write of a whole chunk.
 * The table is remapped and the record queued only after the data write completes; a crash
 * before the next commit leaves the old mapping and the old content intact.
 */
export class DataPath {
  /** performance.now() of the last foreground I/O: the filler yields while this is recent. */
  lastForegroundIo = 0;
  /** The fast path's lock predicate (uncontendedPiece), made once rather than per write. */
  private readonly lockIsFree: HoldsLock;

  constructor(private readonly core: PoolCore) {
    this.lockIsFree = (key) => core.locks.isFree(key);
  }

  checkRange(device: Device, offset: number, length: number, what: string): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new SnapblockError(
        "INVALID_ARGUMENT",
        `${what}: offset and length must be non-negative integers`,
      );
    }
    if (offset + length > device.sizeBytes) {
      throw new SnapblockError(
        "OUT_OF_RANGE",
        `${what} of ${length} bytes at ${offset} goes past the end of ${device.kind} '${device.name}' (${device.sizeBytes} bytes)`,
      );
    }
  }

  /**
   * Reads bytes [from, to) of a chunk's content into `into` at `at`, resolving partial chunks
   * block by block (own block, backing chunk, or zeroes). The caller holds an I/O epoch.
   */
  private readChunkRange(
    phys: number,
    from: number,
    to: number,
    into: Buffer,
    at: number,
    reads: Promise<number>[],
  ): void {
    const cs = this.core.chunkSize;
    const partial = this.core.space.partials.get(phys);
    if (!partial) {
      reads.push(this.readZeroingTail(into, at, to - from, phys * cs + from));
      return;
    }
    for (let pos = from; pos < to;) {
      const b = Math.floor(pos / BLOCK);
      const own = bitSet(partial.valid, b);
      let runEnd = Math.min(to, (b + 1) * BLOCK);
      while (runEnd < to && bitSet(partial.valid, Math.floor(runEnd / BLOCK)) === own) {
        runEnd = Math.min(to, runEnd + BLOCK);
      }
      const source = own ? phys : partial.backing;
      if (source >= 0)
        reads.push(this.readZeroingTail(into, at + pos - from, runEnd - pos, source * cs + pos));
      else into.fill(0, at + pos - from, at + runEnd - from);
      pos = runEnd;
    }
  }

  /**
   * Reads `length` bytes of the data file at `pos` into `into` at `at`; bytes past the file's end
   * (a chunk reserved, never written) read as zeroes, so `into` needs no zeroing beforehand.
   */
  private async readZeroingTail(into: Buffer, at: number, length: number, pos: number): Promise<number> {
    const n = await this.core.data.read(into, at, length, pos);
    if (n < length) into.fill(0, at + n, at + length);
    return n;
  }

  /** Pending chunks of `device` in the byte range, optionally only those the range covers in part. */
  private pendingIn(device: Device, offset: number, length: number, partlyOnly: boolean): number[] {
    const pending = device.pending;
    if (!pending || length === 0) return [];
    const cs = this.core.chunkSize;
    const out: number[] = [];
    const lastByte = offset + length;
    for (const c of pending.chunksIn(Math.floor(offset / cs), Math.ceil(lastByte / cs))) {
      // Only a write of the chunk's full size takes the whole-chunk path (the short last chunk of
      // a device does not), so only that may skip the fetch.
      const whole = offset <= c * cs && lastByte >= (c + 1) * cs;
      if (!partlyOnly || !whole) out.push(c);
    }
    return out;
  }

  async read(device: Device, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    this.core.ensureUsable();
    this.checkRange(device, offset, length, "read");
    if (into && into.length < length) {
      throw new SnapblockError("INVALID_ARGUMENT", `read of ${length} bytes into a buffer of ${into.length}`);
    }
    // Every byte is written below: read, or zeroed (holes, short reads past the data file's end).
    const out = into ? into.subarray(0, length) : Buffer.allocUnsafe(length);
    if (length === 0) return out;
    this.lastForegroundIo = performance.now();
    // Content still on its source is fetched first: a pending chunk never reads as zeroes.
    const pending = this.pendingIn(device, offset, length, false);
    if (pending.length > 0) await this.core.ensureFilled(device, pending);
    const { space, tables, chunkSize: cs } = this.core;
    const io = space.beginIo();
    try {
      const reads: Promise<number>[] = [];
      let runPos = -1;
      let runBuf = 0;
      let runLen = 0;
      const flushRun = (): void => {
        if (runLen > 0) reads.push(this.readZeroingTail(out, runBuf, runLen, runPos));
        runLen = 0;
      };
      for (let pos = offset; pos < offset + length;) {
        const chunk = Math.floor(pos / cs);
        const start = pos - chunk * cs;
        const end = Math.min(cs, offset + length - chunk * cs);
        const phys = tables.physical(device.table, chunk);
        if (phys < 0) {
          flushRun();
          out.fill(0, pos - offset, pos - offset + end - start);
        } else if (space.partials.has(phys)) {
          flushRun();
          this.readChunkRange(phys, start, end, out, pos - offset, reads);
        } else {
          const filePos = phys * cs + start;
          if (runLen > 0 && runPos + runLen === filePos) {
            runLen += end - start;
          } else {
            flushRun();
            runPos = filePos;
            runBuf = pos - offset;
            runLen = end - start;
          }
        }
        pos += end - start;
      }
      flushRun();
      // Every read ends before this returns, also when one fails: the caller may reuse `into`.
      // (The usual read is one run of the data file: awaiting it alone is the same.)
      if (reads.length === 1) await reads[0];
      else if (reads.length > 1) {
        const settled = await Promise.allSettled(reads);
        for (const r of settled) if (r.status === "rejected") throw r.reason;
      }
      return out;
    } catch (err) {
      throw asSnapblockError(err, `read of ${device.kind} '${device.name}'`);
    } finally {
      space.endIo(io);
    }
  }

  async write(device: Device, offset: number, data: Buffer): Promise<void> {
    this.core.ensureUsable();
    if (device.kind !== "volume") {
      throw new SnapblockError("READ_ONLY", `snapshot '${device.name}' is read-only`);
    }
    this.checkRange(device, offset, data.length, "write");
    if (data.length === 0) return;
    this.lastForegroundIo = performance.now();
    const now = this.uncontendedPiece(device, offset, data.length);
    if (
      now !== undefined &&
      (this.writeInPlaceNow(device, now, data) ||
        this.writeRedirectNow(device, now, data) ||
        this.writePartialNow(device, now, data))
    )
      return;
    const gate = this.core.gate(device);
    await gate.enter();
    try {
      const cs = this.core.chunkSize;
      const first = Math.floor(offset / cs);
      const last = Math.floor((offset + data.length - 1) / cs);
      const keys: number[] = [];
      for (let c = first; c <= last; c++) keys.push(lockKey(device, c));
      const unlock = await this.core.locks.lockAll(keys);
      try {
        // A chunk still on its source is fetched before a write covers part of it, so the rest
        // of the chunk keeps its content; a chunk written whole just stops being pending.
        const partly = this.pendingIn(device, offset, data.length, true);
        if (partly.length > 0) await this.core.ensureFilled(device, partly);
        await this.writeLocked(device, offset, data);
      } finally {
        unlock();
      }
    } finally {
      gate.leave();
    }
  }

  /**
   * The steady-state write, done before returning: its chunk (see uncontendedPiece) is this
   * volume's own (no snapshot shares it, not partial). Nothing else runs between the lookup and
   * the write, so neither the gate nor the lock is needed: to a snapshot, the write happened
   * entirely before it. False (nothing done) when the chunk is not the volume's own; the
   * general path then runs.
   */
  private writeInPlaceNow(device: Device, piece: Piece, data: Buffer): boolean {
    if (piece.mode !== "inPlace") return false;
    const { data: file, chunkSize: cs } = this.core;
    try {
      return file.writeNow!([data], piece.phys * cs + piece.start);
    } catch (err) {
      throw asSnapblockError(err, `write to volume '${device.name}'`);
    }
  }

  /**
   * The first write to a chunk after a snapshot, done before returning, under the conditions of
   * writeInPlaceNow: a write of the whole chunk, or of whole 4 KiB blocks of a chunk that is not
   * partial (nothing to read: the new chunk's other blocks keep reading from the old one), into
   * a chunk free right now. The same steps as the general path (reserve, write, record) with no
   * wait between them, so nothing else sees the chunk half done. With 4 KiB chunks and a
   * recovery point a second, nearly every write of a random load is such a write (issue 14's
   * benchmark). False (nothing done) when any condition fails.
   */
  private writeRedirectNow(device: Device, piece: Piece, data: Buffer): boolean {
    const aligned = piece.start % BLOCK === 0 && piece.end % BLOCK === 0;
    if (piece.mode !== "full" && !(piece.mode === "partialNew" && aligned)) return false;
    const { space, data: file, chunkSize: cs } = this.core;
    // Replacing a partial chunk is left to the general path, which takes its physical lock
    // against the filler that may be completing it.
    if (piece.phys >= 0 && space.partials.has(piece.phys)) return false;
    space.reclaim(this.core.committedSeq);
    if (space.reservable < 1) return false; // the general path commits pending releases first
    const [target] = space.reserve(1);
    const io = space.beginIo();
    let written: boolean;
    try {
      written = file.writeNow!([data], target! * cs + piece.start);
    } catch (err) {
      space.unreserve(target!);
      throw asSnapblockError(err, `write to volume '${device.name}'`);
    } finally {
      space.endIo(io);
    }
    if (!written) {
      space.unreserve(target!);
      return false;
    }
    piece.target = target!;
    this.core.record(this.freshRedirectRecord(device, piece, piece.start / BLOCK, piece.end / BLOCK));
    this.reportRedirects(device, [piece]);
    return true;
  }

  /**
   * The writes to a partial chunk, done before returning, under the conditions of
   * writeInPlaceNow, for whole 4 KiB blocks: into the volume's own partial chunk in place
   * ("inPlacePartial": the blocks become its own), or, when the partial chunk is shared (a
   * snapshot after the one it was made for), into a new partial chunk over the same backing
   * that holds copies of the old one's own blocks ("partialOver"). Without these, every first
   * write after a second snapshot to a chunk the first left partial took the general path
   * (issue 13's penalty after two and three snapshots). The old chunk's own blocks are read
   * inline too; false (nothing done) when the file would not read them inline or any other
   * condition fails. uncontendedPiece planned the piece as holding the partial chunk's physical
   * lock, which nobody held: nothing else runs until the record is made.
   */
  private writePartialNow(device: Device, piece: Piece, data: Buffer): boolean {
    if (piece.mode !== "inPlacePartial" && piece.mode !== "partialOver") return false;
    if (piece.start % BLOCK !== 0 || piece.end % BLOCK !== 0) return false;
    const { space, data: file, chunkSize: cs } = this.core;
    const partial = space.partials.get(piece.phys);
    if (partial === undefined) return false;
    const b0 = piece.start / BLOCK;
    const b1 = piece.end / BLOCK;
    const valid = Uint8Array.from(partial.valid);
    setBits(valid, b0, b1);
    if (piece.mode === "inPlacePartial") {
      try {
        if (!file.writeNow!([data], piece.phys * cs + piece.start)) return false;
      } catch (err) {
        throw asSnapblockError(err, `write to volume '${device.name}'`);
      }
      const record = this.partialValidRecord(piece.phys, partial.valid, valid);
      if (record) this.core.record(record);
      return true;
    }
    if (!file.readNow) return false;
    space.reclaim(this.core.committedSeq);
    if (space.reservable < 1) return false; // the general path commits pending releases first
    const io = space.beginIo();
    let target = -1;
    try {
      // The new chunk's runs of blocks: the written ones from `data`, the rest copied from the
      // old chunk's own blocks (read first: nothing is reserved if a read would not run inline).
      const runs: { at: number; buf: Buffer }[] = [];
      const oldBlocks = (buf: Buffer, r0: number, from: number, to: number): boolean =>
        to <= from ||
        // undefined: not inline; a short read (past the file's end) leaves zeroes
        file.readNow!(buf, (from - r0) * BLOCK, (to - from) * BLOCK, piece.phys * cs + from * BLOCK) !==
          undefined;
      for (const [r0, r1] of blockRuns(valid, cs / BLOCK)) {
        // The written blocks are one run of `valid`, or inside one.
        const holdsWrite = r0 <= b0 && b1 <= r1;
        if (holdsWrite && r0 === b0 && r1 === b1) {
          runs.push({ at: r0 * BLOCK, buf: data });
          continue;
        }
        const buf = Buffer.alloc((r1 - r0) * BLOCK);
        if (holdsWrite) {
          if (!oldBlocks(buf, r0, r0, b0) || !oldBlocks(buf, r0, b1, r1)) return false;
          data.copy(buf, (b0 - r0) * BLOCK);
        } else if (!oldBlocks(buf, r0, r0, r1)) return false;
        runs.push({ at: r0 * BLOCK, buf });
      }
      target = space.reserve(1)[0]!;
      for (const run of runs) {
        if (!file.writeNow!([run.buf], target * cs + run.at)) {
          space.unreserve(target);
          return false;
        }
      }
    } catch (err) {
      if (target >= 0) space.unreserve(target);
      throw asSnapblockError(err, `write to volume '${device.name}'`);
    } finally {
      space.endIo(io);
    }
    piece.target = target;
    this.core.record({
      type: RecordType.MapPartial,
      id: device.id,
      chunk: piece.chunk,
      phys: target,
      backing: partial.backing,
      valid,
    });
    this.reportRedirects(device, [piece]);
    return true;
  }

  /**
   * The plan of a write that falls in one chunk of a volume, when it may run before returning:
   * the data file takes writes inline, no content is still to arrive, no snapshot holds writes
   * back, and nobody holds or waits for the chunk's lock. Partial chunks count as unlocked, so
   * their modes are the ones that are safe without the lock. Undefined when any condition fails.
   */
  private uncontendedPiece(device: Device, offset: number, length: number): Piece | undefined {
    const { data: file, chunkSize: cs, locks } = this.core;
    const chunk = Math.floor(offset / cs);
    if (
      !file.writeNow ||
      device.pending !== undefined ||
      Math.floor((offset + length - 1) / cs) !== chunk ||
      !this.core.gate(device).open ||
      !locks.isFree(lockKey(device, chunk)) ||
      !this.core.alive(device)
    ) {
      return undefined;
    }
    // A partial chunk whose physical lock nobody holds is planned as locked: the fast paths run
    // to their record without a wait, so the filler cannot start on it in between.
    return this.plan(device, offset, length, this.lockIsFree)[0];
  }

  /**
   * Decides each piece's mode. A partial chunk is written in place only when `lockedPartials`
   * says its physical lock is held (it may have become exclusive after the locks were taken):
   * otherwise the piece is redirected, which is always safe.
   */
  private plan(device: Device, offset: number, length: number, lockedPartials?: HoldsLock): Piece[] {
    const { space, tables, chunkSize: cs } = this.core;
    const pieces: Piece[] = [];
    // At the ceiling a partly written shared chunk is copied whole ("merge"), making no partial chunk.
    const atCeiling = space.partials.size > 0 && this.core.atPartialCeiling();
    for (let pos = offset; pos < offset + length;) {
      const chunk = Math.floor(pos / cs);
      const start = pos - chunk * cs;
      const end = Math.min(cs, offset + length - chunk * cs);
      const lk = tables.lookup(device.table, chunk, this.core.committedSeq);
      let mode: Mode;
      const partial = lk.chunk >= 0 ? space.partials.get(lk.chunk) : undefined;
      // Both modes that use a partial chunk's own state need its physical lock (against the
      // filler); without it (not taken, or the chunk became partial after the locks were taken)
      // the piece falls back to a mode that is safe anyway.
      const lockedPartial = !lockedPartials || lockedPartials(physKey(lk.chunk));
      if (lk.inPlace && !partial) mode = "inPlace";
      else if (lk.inPlace && lockedPartial) mode = "inPlacePartial";
      else if (start === 0 && end === cs) mode = "full";
      else if (atCeiling) mode = "merge";
      else if (partial) {
        mode = lockedPartial && !coversRest(partial.valid, start, end, cs) ? "partialOver" : "merge";
      } else mode = "partialNew";
      pieces.push({ chunk, start, end, bufOffset: pos - offset, phys: lk.chunk, mode, target: -1 });
      pos += end - start;
    }
    return pieces;
  }

  private async writeLocked(device: Device, offset: number, data: Buffer): Promise<void> {
    const { space } = this.core;
    if (!this.core.alive(device)) {
      throw new SnapblockError("NOT_FOUND", `volume '${device.name}' was deleted`);
    }
    // Partial chunks written in place or redirected onto their backing are also locked by
    // physical chunk, against the filler (whose completion would drop the backing's reference).
    const partialKeys = (space.partials.size === 0 ? [] : this.plan(device, offset, data.length))
      .filter((p) => p.mode === "inPlacePartial" || p.mode === "partialOver")
      .map((p) => physKey(p.phys))
      .sort((a, b) => a - b);
    const unlockPhys = partialKeys.length > 0 ? await this.core.locks.lockAll(partialKeys) : undefined;
    try {
      let pieces: Piece[];
      let targets: number[];
      // Plan, reserve and register the I/O in one synchronous stretch: a chunk looked up here
      // cannot be reused by anyone until this I/O ends.
      let locked = NO_LOCKED_PARTIALS;
      if (partialKeys.length > 0) {
        const held = new Set(partialKeys);
        locked = (key) => held.has(key);
      }
      for (let attempt = 0; ; attempt++) {
        pieces = this.plan(device, offset, data.length, locked);
        const needed = pieces.filter(redirects).length;
        if (needed === 0) {
          targets = []; // all in place: no chunk to reserve (the common steady-state write)
          break;
        }
        space.reclaim(this.core.committedSeq);
        // Compared with what reserve() can hand out now, not with `free`, which counts released
        // chunks whose release is not yet durable: those need the commit below first (a trim
        // on a full pool, then a write elsewhere, must not fail for lack of space).
        if (needed <= space.reservable || attempt >= 2 || !space.hasPendingAfter(this.core.committedSeq)) {
          targets = space.reserve(needed); // throws NO_SPACE when the pool is really full
          break;
        }
        await this.core.commit(); // released chunks become free once their release is durable
      }
      const io = space.beginIo();
      let t = 0;
      for (const p of pieces) if (redirects(p)) p.target = targets[t++]!;
      let records: MetaRecord[];
      try {
        records = await this.writePieces(device, pieces, data);
      } catch (err) {
        for (const c of targets) space.unreserve(c);
        throw asSnapblockError(err, `write to volume '${device.name}'`);
      } finally {
        space.endIo(io);
      }
      for (const r of records) this.core.record(r);
      if (targets.length > 0) this.reportRedirects(device, pieces);
    } finally {
      unlockPhys?.();
    }
  }

  /** Tells the observer (metrics) what the pieces' redirects were: shared or fresh, by kind. */
  private reportRedirects(device: Device, pieces: readonly Piece[]): void {
    const redirected = this.core.observer.redirected;
    if (!redirected) return;
    const shared = { full: 0, partial: 0, merged: 0 };
    const fresh = { full: 0, partial: 0 };
    for (const p of pieces) {
      if (p.mode === "merge") shared.merged++;
      else if (p.mode === "partialOver") shared.partial++;
      else if (p.mode === "full" || p.mode === "partialNew") {
        const kind = p.mode === "full" ? "full" : "partial";
        if (p.phys >= 0) shared[kind]++;
        else fresh[kind]++;
      }
    }
    redirected({ device: device.name, shared, fresh });
  }

  /**
   * The record that maps a "full" or "partialNew" piece's new chunk (`target`): a whole chunk,
   * or a partial one holding blocks [b0, b1) over the chunk it replaces.
   */
  private freshRedirectRecord(device: Device, p: Piece, b0: number, b1: number): MetaRecord {
    const blocksPerChunk = this.core.chunkSize / BLOCK;
    if (b0 === 0 && b1 === blocksPerChunk)
      return { type: RecordType.Map, id: device.id, chunk: p.chunk, phys: p.target };
    const valid = new Uint8Array(Math.ceil(blocksPerChunk / 8));
    setBits(valid, b0, b1);
    return {
      type: RecordType.MapPartial,
      id: device.id,
      chunk: p.chunk,
      phys: p.target,
      backing: p.phys,
      valid,
    };
  }

  /**
   * The record after blocks of partial chunk `phys` were written in place (its own blocks were
   * `before`, are `after` now): complete, or its new bitmap; undefined when nothing changed.
   */
  private partialValidRecord(phys: number, before: Uint8Array, after: Uint8Array): MetaRecord | undefined {
    if (allSet(after, this.core.chunkSize / BLOCK)) return { type: RecordType.PartialDone, id: phys };
    if (after.every((v, i) => v === before[i])) return undefined;
    return { type: RecordType.PartialValid, id: phys, valid: after };
  }

  /** Performs the pieces' I/O; returns the records that publish the redirected ones. */
  private async writePieces(device: Device, pieces: Piece[], data: Buffer): Promise<MetaRecord[]> {
    const cs = this.core.chunkSize;
    const blocksPerChunk = cs / BLOCK;
    const records: MetaRecord[] = [];
    const writes: { pos: number; buf: Buffer }[] = [];
    const reads: Promise<number>[] = [];
    const overlays: (() => void)[] = [];
    for (const p of pieces) {
      const slice = data.subarray(p.bufOffset, p.bufOffset + (p.end - p.start));
      switch (p.mode) {
        case "inPlace":
          writes.push({ pos: p.phys * cs + p.start, buf: slice });
          break;
        case "full":
          writes.push({ pos: p.target * cs, buf: slice });
          records.push(this.freshRedirectRecord(device, p, 0, blocksPerChunk));
          break;
        case "merge": {
          const whole = Buffer.alloc(cs); // a hole (at the ceiling) stays zeroes around the write
          if (p.phys >= 0) this.readChunkRange(p.phys, 0, cs, whole, 0, reads);
          overlays.push(() => slice.copy(whole, p.start));
          writes.push({ pos: p.target * cs, buf: whole });
          records.push({ type: RecordType.Map, id: device.id, chunk: p.chunk, phys: p.target });
          break;
        }
        case "partialOver": {
          // Held under the chunk's physical lock: its backing and bitmap cannot change.
          const partial = this.core.space.partials.get(p.phys)!;
          const b0 = Math.floor(p.start / BLOCK);
          const b1 = Math.ceil(p.end / BLOCK);
          const valid = Uint8Array.from(partial.valid);
          setBits(valid, b0, b1);
          // One buffer per run of blocks the new chunk holds: the written range (its edge blocks
          // completed from the old chunk's content) and the old chunk's own blocks.
          for (const [r0, r1] of blockRuns(valid, blocksPerChunk)) {
            const run = Buffer.alloc((r1 - r0) * BLOCK);
            const copy = (from: number, to: number): void => {
              if (to > from)
                this.readChunkRange(p.phys, from * BLOCK, to * BLOCK, run, (from - r0) * BLOCK, reads);
            };
            if (b0 >= r0 && b1 <= r1) {
              copy(r0, b0);
              if (p.start % BLOCK !== 0) copy(b0, b0 + 1);
              if (p.end % BLOCK !== 0) copy(b1 - 1, b1);
              copy(b1, r1);
              overlays.push(() => slice.copy(run, p.start - r0 * BLOCK));
            } else copy(r0, r1);
            writes.push({ pos: p.target * cs + r0 * BLOCK, buf: run });
          }
          records.push({
            type: RecordType.MapPartial,
            id: device.id,
            chunk: p.chunk,
            phys: p.target,
            backing: partial.backing,
            valid,
          });
          break;
        }
        case "inPlacePartial":
        case "partialNew": {
          const b0 = Math.floor(p.start / BLOCK);
          const b1 = Math.ceil(p.end / BLOCK);
          const blocks = Buffer.alloc((b1 - b0) * BLOCK);
          // Edge blocks the write covers only in part keep their current content around it.
          const headPartial = p.start % BLOCK !== 0;
          const tailPartial = p.end % BLOCK !== 0 && (b1 - 1 > b0 || !headPartial);
          const fetch = (b: number): void => {
            if (p.phys >= 0)
              this.readChunkRange(p.phys, b * BLOCK, (b + 1) * BLOCK, blocks, (b - b0) * BLOCK, reads);
          };
          if (headPartial) fetch(b0);
          if (tailPartial) fetch(b1 - 1);
          overlays.push(() => slice.copy(blocks, p.start - b0 * BLOCK));
          const chunkPos = (p.mode === "inPlacePartial" ? p.phys : p.target) * cs;
          writes.push({ pos: chunkPos + b0 * BLOCK, buf: blocks });
          if (p.mode === "partialNew") {
            records.push(this.freshRedirectRecord(device, p, b0, b1));
          } else {
            const partial = this.core.space.partials.get(p.phys)!;
            const valid = Uint8Array.from(partial.valid);
            setBits(valid, b0, b1);
            const record = this.partialValidRecord(p.phys, partial.valid, valid);
            if (record) records.push(record);
          }
          break;
        }
      }
    }
    await Promise.all(reads);
    for (const overlay of overlays) overlay();
    // Coalesce physically contiguous writes into one positional write each.
    writes.sort((a, b) => a.pos - b.pos);
    const issued: Promise<void>[] = [];
    let runPos = -1;
    let runEnd = -1;
    let runBufs: Buffer[] = [];
    for (const w of writes) {
      if (runBufs.length > 0 && w.pos === runEnd) {
        runBufs.push(w.buf);
      } else {
        if (runBufs.length > 0) issued.push(this.core.data.write(runBufs, runPos));
        runPos = w.pos;
        runBufs = [w.buf];
        runEnd = w.pos;
      }
      runEnd += w.buf.length;
    }
    if (runBufs.length > 0) issued.push(this.core.data.write(runBufs, runPos));
    // Every write ends before this returns, also when one fails: on failure the caller gives the
    // target chunks back, and a write still running could land in a chunk given to someone else
    // (or read `data` after the caller reused it).
    const settled = await Promise.allSettled(issued);
    for (const r of settled) if (r.status === "rejected") throw r.reason;
    return records;
  }

  /**
   * Completes a partial chunk (the background filler): copies its missing blocks from the
   * backing chunk (or writes zeroes) into it, then records it complete, which releases the
   * backing chunk. The chunk's content does not change, so it may be shared meanwhile.
   */
  async fillPartial(phys: number): Promise<boolean> {
    this.core.ensureUsable();
    const unlock = await this.core.locks.lockAll([physKey(phys)]);
    try {
      const { space, chunkSize: cs } = this.core;
      const partial = space.partials.get(phys);
      if (!partial) return false;
      const io = space.beginIo();
      try {
        const blocks = cs / BLOCK;
        const writes: Promise<void>[] = [];
        for (let b = 0; b < blocks;) {
          if (bitSet(partial.valid, b)) {
            b++;
            continue;
          }
          let e = b + 1;
          while (e < blocks && !bitSet(partial.valid, e)) e++;
          const buf = Buffer.alloc((e - b) * BLOCK);
          if (partial.backing >= 0)
            await this.core.data.read(buf, 0, buf.length, partial.backing * cs + b * BLOCK);
          writes.push(this.core.data.write([buf], phys * cs + b * BLOCK));
          b = e;
        }
        await Promise.all(writes);
      } finally {
        space.endIo(io);
      }
      // The chunk may have been freed (its device deleted) while the copy ran.
      if (space.partials.get(phys) !== partial) return false;
      this.core.record({ type: RecordType.PartialDone, id: phys });
      return true;
    } catch (err) {
      throw asSnapblockError(err, `completing partial chunk ${phys}`);
    } finally {
      unlock();
    }
  }

  /**
   * Gives a chunk a copy of its own if it is shared (the background full copy): under the
   * chunk's lock, the shared chunk is read and written whole to a new chunk, then remapped.
   */
  async unshare(device: Device, chunk: number): Promise<void> {
    this.core.ensureUsable();
    const gate = this.core.gate(device);
    await gate.enter();
    try {
      const unlock = await this.core.locks.lockAll([lockKey(device, chunk)]);
      try {
        if (!this.core.alive(device)) return;
        const { space, tables, chunkSize: cs } = this.core;
        const lk = tables.lookup(device.table, chunk, this.core.committedSeq);
        if (lk.chunk < 0 || lk.inPlace) return;
        space.reclaim(this.core.committedSeq);
        const [target] = space.reserve(1);
        const io = space.beginIo();
        try {
          const whole = Buffer.alloc(cs);
          const reads: Promise<number>[] = [];
          this.readChunkRange(lk.chunk, 0, cs, whole, 0, reads);
          await Promise.all(reads);
          await this.core.data.write([whole], target! * cs);
        } catch (err) {
          space.unreserve(target!);
          throw asSnapblockError(err, `copying a chunk of volume '${device.name}'`);
        } finally {
          space.endIo(io);
        }
        this.core.record({ type: RecordType.Map, id: device.id, chunk, phys: target! });
      } finally {
        unlock();
      }
    } finally {
      gate.leave();
    }
  }

  /**
   * Zeroes a range. Whole chunks are unmapped (space goes back to the pool; holes read as
   * zeroes); the partial chunks at either end are written with zeroes unless they are holes.
   */
  async zero(device: Device, offset: number, length: number): Promise<void> {
    this.core.ensureUsable();
    if (device.kind !== "volume") {
      throw new SnapblockError("READ_ONLY", `snapshot '${device.name}' is read-only`);
    }
    this.checkRange(device, offset, length, "zero");
    if (length === 0) return;
    const cs = this.core.chunkSize;
    const end = offset + length;
    const firstFull = Math.ceil(offset / cs);
    // A range reaching the end of the device covers its last, partial chunk entirely.
    const lastFullEnd = end === device.sizeBytes ? Math.ceil(end / cs) : Math.floor(end / cs);
    const edges: [number, number][] = [];
    if (firstFull >= lastFullEnd) {
      edges.push([offset, end]);
    } else {
      if (offset < firstFull * cs) edges.push([offset, firstFull * cs]);
      if (end > lastFullEnd * cs) edges.push([lastFullEnd * cs, end]);
    }
    for (const [from, to] of edges) {
      for (let pos = from; pos < to;) {
        const chunk = Math.floor(pos / cs);
        const pieceEnd = Math.min(to, (chunk + 1) * cs);
        // A hole is zero already; anything else gets real zeroes written.
        if (this.core.tables.physical(device.table, chunk) >= 0) {
          await this.write(device, pos, Buffer.alloc(pieceEnd - pos));
        }
        pos = pieceEnd;
      }
    }
    if (firstFull < lastFullEnd) {
      // Unmapping must not race a redirect in flight on the same chunks: hold writes back.
      await this.core.gate(device).exclusive(() => {
        if (!this.core.alive(device)) return;
        this.core.record({
          type: RecordType.Unmap,
          id: device.id,
          first: firstFull,
          count: lastFullEnd - firstFull,
        });
      });
    }
  }

  /**
   * Allocation map of a range, merged into runs; from the tables alone. Chunks still pending are
   * data (they hold content, only not here yet), so clients never skip them as holes.
   */
  extents(device: Device, offset: number, length: number): Extent[] {
    this.checkRange(device, offset, length, "extents");
    const cs = this.core.chunkSize;
    const out: Extent[] = [];
    const push = (from: number, to: number, allocated: boolean): void => {
      if (to <= from) return;
      const prev = out[out.length - 1];
      if (prev && prev.allocated === allocated && prev.offset + prev.length === from)
        prev.length += to - from;
      else out.push({ offset: from, length: to - from, allocated });
    };
    const end = offset + length;
    let cursor = offset;
    const allocated = (chunk: number): void => {
      const from = Math.max(offset, chunk * cs);
      const to = Math.min(end, (chunk + 1) * cs);
      push(cursor, from, false);
      push(from, to, true);
      cursor = to;
    };
    const lo = Math.floor(offset / cs);
    const hi = Math.ceil(end / cs);
    if (!device.pending) {
      this.core.tables.forEachMappedIn(device.table, lo, hi, allocated);
    } else {
      const mapped: number[] = [];
      this.core.tables.forEachMappedIn(device.table, lo, hi, (c) => mapped.push(c));
      const pending = [...device.pending.chunksIn(lo, hi)];
      let i = 0;
      let j = 0;
      while (i < mapped.length || j < pending.length) {
        const next = Math.min(mapped[i] ?? Infinity, pending[j] ?? Infinity);
        if (mapped[i] === next) i++;
        if (pending[j] === next) j++;
        allocated(next);
      }
    }
    push(cursor, end, false);
    return out;
  }
}
