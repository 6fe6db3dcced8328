import { SnapblockError, asSnapblockError } from "../errors/index.js";
import type { Device } from "./metadata.js";
import type { PoolCore } from "./pool-core.js";
import { RecordType } from "./records.js";
import type { Extent } from "./types.js";

/** One chunk's share of a request. */
interface Piece {
  chunk: number;
  /** Byte range inside the chunk. */
  start: number;
  end: number;
  /** Offset of this piece in the request's buffer. */
  bufOffset: number;
  /** Physical chunk currently mapped (-1: hole). */
  phys: number;
  inPlace: boolean;
  /** New chunk for a redirected write. */
  target: number;
}

/** Logical chunk number -> lock key, unique per device. */
function lockKey(device: Device, chunk: number): number {
  return device.id * 2 ** 32 + chunk;
}

/**
 * The data path: byte-addressed reads and writes over chunk tables.
 *
 * Writes to a chunk the device owns exclusively (and durably) go in place. Writes to a shared
 * chunk or a hole go to a newly reserved chunk (redirect-on-write): the rest of the chunk is
 * first copied from the old one (or zero-filled), the new chunk is written whole, and only after
 * the write completes is the table remapped and a MAP record queued. A crash before the next
 * commit leaves the old mapping, the old content intact.
 */
export class DataPath {
  constructor(private readonly core: PoolCore) {}

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

  async read(device: Device, offset: number, length: number): Promise<Buffer> {
    this.core.ensureUsable();
    this.checkRange(device, offset, length, "read");
    const out = Buffer.alloc(length);
    if (length === 0) return out;
    const { space, tables, chunkSize: cs } = this.core;
    const io = space.beginIo();
    try {
      const reads: Promise<number>[] = [];
      let runPos = -1;
      let runBuf = 0;
      let runLen = 0;
      const flushRun = (): void => {
        if (runLen > 0) reads.push(this.core.data.read(out, runBuf, runLen, runPos));
        runLen = 0;
      };
      for (let pos = offset; pos < offset + length;) {
        const chunk = Math.floor(pos / cs);
        const start = pos - chunk * cs;
        const end = Math.min(cs, offset + length - chunk * cs);
        const phys = tables.physical(device.table, chunk);
        if (phys < 0) {
          flushRun();
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
      // Short reads past the end of the data file are zero: the buffer already is.
      await Promise.all(reads);
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
        await this.writeLocked(device, offset, data);
      } finally {
        unlock();
      }
    } finally {
      gate.leave();
    }
  }

  private async writeLocked(device: Device, offset: number, data: Buffer): Promise<void> {
    const { space, tables, chunkSize: cs } = this.core;
    if (!this.core.alive(device)) {
      throw new SnapblockError("NOT_FOUND", `volume '${device.name}' was deleted`);
    }
    let pieces: Piece[];
    let targets: number[];
    // Plan, reserve and register the I/O in one synchronous stretch: a chunk looked up here
    // cannot be reused by anyone until this I/O ends.
    for (let attempt = 0; ; attempt++) {
      pieces = [];
      let redirects = 0;
      for (let pos = offset; pos < offset + data.length;) {
        const chunk = Math.floor(pos / cs);
        const start = pos - chunk * cs;
        const end = Math.min(cs, offset + data.length - chunk * cs);
        const lk = tables.lookup(device.table, chunk, this.core.committedSeq);
        if (!lk.inPlace) redirects++;
        pieces.push({
          chunk,
          start,
          end,
          bufOffset: pos - offset,
          phys: lk.chunk,
          inPlace: lk.inPlace,
          target: -1,
        });
        pos += end - start;
      }
      space.reclaim(this.core.committedSeq);
      if (redirects <= space.free || attempt >= 2 || !space.hasPendingAfter(this.core.committedSeq)) {
        targets = space.reserve(redirects); // throws NO_SPACE when the pool is really full
        break;
      }
      await this.core.commit(); // released chunks become free once their release is durable
    }
    const io = space.beginIo();
    let t = 0;
    for (const p of pieces) if (!p.inPlace) p.target = targets[t++]!;
    try {
      await this.writePieces(pieces, data);
    } catch (err) {
      for (const c of targets) space.unreserve(c);
      throw asSnapblockError(err, `write to volume '${device.name}'`);
    } finally {
      space.endIo(io);
    }
    for (const p of pieces) {
      if (!p.inPlace)
        this.core.record({ type: RecordType.Map, id: device.id, chunk: p.chunk, phys: p.target });
    }
  }

  private async writePieces(pieces: Piece[], data: Buffer): Promise<void> {
    const cs = this.core.chunkSize;
    // Partial writes to a redirected chunk carry the rest of the old chunk along.
    const merged = await Promise.all(
      pieces.map(async (p): Promise<Buffer> => {
        const slice = data.subarray(p.bufOffset, p.bufOffset + (p.end - p.start));
        if (p.inPlace || (p.start === 0 && p.end === cs)) return slice;
        const whole = Buffer.alloc(cs);
        if (p.phys >= 0) await this.core.data.read(whole, 0, cs, p.phys * cs);
        slice.copy(whole, p.start);
        return whole;
      }),
    );
    // Coalesce physically contiguous pieces into one positional write each.
    const writes: Promise<void>[] = [];
    let runPos = -1;
    let runEnd = -1;
    let runBufs: Buffer[] = [];
    pieces.forEach((p, i) => {
      const buf = merged[i]!;
      const pos = p.inPlace ? p.phys * cs + p.start : p.target * cs + (buf.length === cs ? 0 : p.start);
      if (runBufs.length > 0 && pos === runEnd) {
        runBufs.push(buf);
      } else {
        if (runBufs.length > 0) writes.push(this.core.data.write(runBufs, runPos));
        runPos = pos;
        runBufs = [buf];
        runEnd = pos;
      }
      runEnd += buf.length;
    });
    if (runBufs.length > 0) writes.push(this.core.data.write(runBufs, runPos));
    await Promise.all(writes);
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
          await this.core.data.read(whole, 0, cs, lk.chunk * cs);
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

  /** Allocation map of a range, merged into runs; from the tables alone. */
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
    this.core.tables.forEachMappedIn(device.table, Math.floor(offset / cs), Math.ceil(end / cs), (chunk) => {
      const from = Math.max(offset, chunk * cs);
      const to = Math.min(end, (chunk + 1) * cs);
      push(cursor, from, false);
      push(from, to, true);
      cursor = to;
    });
    push(cursor, end, false);
    return out;
  }
}
