import { SnapblockError } from "../errors/index.js";
import { mapSize, readMap, writeMap, type StringMap } from "./string-maps.js";

/**
 * Metadata records: every change to a pool's tables is one record, applied to memory at once and
 * appended to the journal at the next commit. Replaying the records after the last checkpoint, in
 * order, rebuilds exactly the committed state. Encoding: little-endian (docs/engine-format.md).
 */
export const enum RecordType {
  Create = 1,
  Delete = 2,
  Map = 3,
  Unmap = 4,
  Resize = 5,
  CopyState = 6,
  /** A redirect-on-write that wrote only some blocks of the new chunk. */
  MapPartial = 7,
  /** More blocks of a partial chunk hold their own data (the `id` field carries the chunk). */
  PartialValid = 8,
  /** A partial chunk is complete; its backing reference is dropped (`id` carries the chunk). */
  PartialDone = 9,
  /** Chunks of a device whose content comes from elsewhere (`source`) and is not here yet. */
  Pending = 10,
  /** A pending chunk arrived: physical chunk `id` holds it for every device in `ids`. */
  Fill = 11,
  /** A pending chunk arrived as a hole (zeroes): unmapped in every device in `ids` (`id`: the chunk). */
  FillHole = 12,
  /** A volume's protection policy (recovery points) is set; an empty policy turns it off. */
  Protect = 13,
  /**
   * A device's annotations (string map kept for the layer above, e.g. the CSI name), replaced
   * whole; they live and die with the device.
   */
  Annotate = 14,
  /** A named string map in one of the pool's note tables (`id` carries the table), or its removal. */
  Note = 15,
  /**
   * A recovery point is pinned (exported as a user's snapshot: thinning and the space rule leave
   * it) or unpinned. The pin lives and dies with the device.
   */
  Pin = 16,
}

export type DeviceKindCode = 1 | 2; // 1 volume, 2 snapshot

export type MetaRecord =
  | {
      type: RecordType.Create;
      id: number;
      kind: DeviceKindCode;
      /** Device whose table the new one shares (0: a new, empty volume). */
      sourceId: number;
      sizeBytes: number;
      createdAtMs: number;
      name: string;
    }
  | { type: RecordType.Delete; id: number }
  | { type: RecordType.Map; id: number; chunk: number; phys: number }
  | { type: RecordType.Unmap; id: number; first: number; count: number }
  | { type: RecordType.Resize; id: number; sizeBytes: number }
  | { type: RecordType.CopyState; id: number; copying: boolean }
  | {
      type: RecordType.MapPartial;
      id: number;
      chunk: number;
      phys: number;
      backing: number;
      valid: Uint8Array;
    }
  | { type: RecordType.PartialValid; id: number; valid: Uint8Array }
  | { type: RecordType.PartialDone; id: number }
  | {
      type: RecordType.Pending;
      id: number;
      source: string;
      /** Progress denominator: the chunks pending when the device was made. */
      total: number;
      /** [first, count] runs of logical chunks. */
      ranges: [number, number][];
    }
  | { type: RecordType.Fill; id: number; chunk: number; ids: number[] }
  | { type: RecordType.FillHole; id: number; ids: number[] }
  | { type: RecordType.Protect; id: number; policy: string }
  | { type: RecordType.Annotate; id: number; map: StringMap }
  | { type: RecordType.Pin; id: number; pinned: boolean }
  /** `map` undefined: the entry is removed. */
  | { type: RecordType.Note; id: number; name: string; map: StringMap | undefined };

/** -1 (no backing: missing blocks read as zeroes) is stored as 0xffffffff. */
const NO_BACKING = 0xffffffff;

export function encodedSize(r: MetaRecord): number {
  switch (r.type) {
    case RecordType.Create:
      return 1 + 4 + 1 + 4 + 8 + 8 + 2 + Buffer.byteLength(r.name, "utf8");
    case RecordType.Delete:
      return 1 + 4;
    case RecordType.Map:
      return 1 + 12;
    case RecordType.Unmap:
      return 1 + 12;
    case RecordType.Resize:
      return 1 + 4 + 8;
    case RecordType.CopyState:
      return 1 + 4 + 1;
    case RecordType.MapPartial:
      return 1 + 4 + 12 + 2 + r.valid.length;
    case RecordType.PartialValid:
      return 1 + 4 + 2 + r.valid.length;
    case RecordType.PartialDone:
      return 1 + 4;
    case RecordType.Pending:
      return 1 + 4 + 2 + Buffer.byteLength(r.source, "utf8") + 4 + 4 + 8 * r.ranges.length;
    case RecordType.Fill:
      return 1 + 4 + 4 + 2 + 4 * r.ids.length;
    case RecordType.FillHole:
      return 1 + 4 + 2 + 4 * r.ids.length;
    case RecordType.Protect:
      return 1 + 4 + 2 + Buffer.byteLength(r.policy, "utf8");
    case RecordType.Annotate:
      return 1 + 4 + mapSize(r.map);
    case RecordType.Note:
      return 1 + 4 + 2 + Buffer.byteLength(r.name, "utf8") + 1 + (r.map ? mapSize(r.map) : 0);
    case RecordType.Pin:
      return 1 + 4 + 1;
  }
}

/** Writes `r` at `off`; returns the offset after it. */
export function encodeRecord(r: MetaRecord, buf: Buffer, off: number): number {
  buf[off++] = r.type;
  off = buf.writeUInt32LE(r.id, off);
  switch (r.type) {
    case RecordType.Create: {
      buf[off++] = r.kind;
      off = buf.writeUInt32LE(r.sourceId, off);
      off = buf.writeBigUInt64LE(BigInt(r.sizeBytes), off);
      off = buf.writeBigUInt64LE(BigInt(r.createdAtMs), off);
      const len = buf.write(r.name, off + 2, "utf8");
      buf.writeUInt16LE(len, off);
      return off + 2 + len;
    }
    case RecordType.Delete:
      return off;
    case RecordType.Map:
      off = buf.writeUInt32LE(r.chunk, off);
      return buf.writeUInt32LE(r.phys, off);
    case RecordType.Unmap:
      off = buf.writeUInt32LE(r.first, off);
      return buf.writeUInt32LE(r.count, off);
    case RecordType.Resize:
      return buf.writeBigUInt64LE(BigInt(r.sizeBytes), off);
    case RecordType.CopyState:
      buf[off] = r.copying ? 1 : 0;
      return off + 1;
    case RecordType.MapPartial:
      off = buf.writeUInt32LE(r.chunk, off);
      off = buf.writeUInt32LE(r.phys, off);
      off = buf.writeUInt32LE(r.backing < 0 ? NO_BACKING : r.backing, off);
      off = buf.writeUInt16LE(r.valid.length, off);
      buf.set(r.valid, off);
      return off + r.valid.length;
    case RecordType.PartialValid:
      off = buf.writeUInt16LE(r.valid.length, off);
      buf.set(r.valid, off);
      return off + r.valid.length;
    case RecordType.PartialDone:
      return off;
    case RecordType.Pending: {
      const len = buf.write(r.source, off + 2, "utf8");
      buf.writeUInt16LE(len, off);
      off += 2 + len;
      off = buf.writeUInt32LE(r.total, off);
      off = buf.writeUInt32LE(r.ranges.length, off);
      for (const [first, count] of r.ranges) {
        off = buf.writeUInt32LE(first, off);
        off = buf.writeUInt32LE(count, off);
      }
      return off;
    }
    case RecordType.Fill:
      off = buf.writeUInt32LE(r.chunk, off);
      return writeIds(buf, off, r.ids);
    case RecordType.FillHole:
      return writeIds(buf, off, r.ids);
    case RecordType.Protect: {
      const len = buf.write(r.policy, off + 2, "utf8");
      buf.writeUInt16LE(len, off);
      return off + 2 + len;
    }
    case RecordType.Annotate:
      return writeMap(buf, off, r.map);
    case RecordType.Note: {
      const len = buf.write(r.name, off + 2, "utf8");
      buf.writeUInt16LE(len, off);
      off += 2 + len;
      buf[off++] = r.map ? 1 : 0;
      return r.map ? writeMap(buf, off, r.map) : off;
    }
    case RecordType.Pin:
      buf[off] = r.pinned ? 1 : 0;
      return off + 1;
  }
}

function writeIds(buf: Buffer, off: number, ids: number[]): number {
  off = buf.writeUInt16LE(ids.length, off);
  for (const id of ids) off = buf.writeUInt32LE(id, off);
  return off;
}

/** Decodes the record at `off`; returns it and the offset after it. */
export function decodeRecord(buf: Buffer, off: number): { record: MetaRecord; next: number } {
  const need = (n: number): void => {
    if (off + n > buf.length) throw new SnapblockError("CORRUPT", "journal record runs past its batch");
  };
  const readIds = (at: number): { ids: number[]; next: number } => {
    off = at;
    need(2);
    const n = buf.readUInt16LE(off);
    off += 2;
    need(4 * n);
    const ids: number[] = [];
    for (let i = 0; i < n; i++, off += 4) ids.push(buf.readUInt32LE(off));
    return { ids, next: off };
  };
  need(5);
  const type = buf[off]! as RecordType;
  const id = buf.readUInt32LE(off + 1);
  off += 5;
  switch (type) {
    case RecordType.Create: {
      need(1 + 4 + 8 + 8 + 2);
      const kind = buf[off]!;
      if (kind !== 1 && kind !== 2)
        throw new SnapblockError("CORRUPT", `journal record has device kind ${kind}`);
      const sourceId = buf.readUInt32LE(off + 1);
      const sizeBytes = Number(buf.readBigUInt64LE(off + 5));
      const createdAtMs = Number(buf.readBigUInt64LE(off + 13));
      const len = buf.readUInt16LE(off + 21);
      off += 23;
      need(len);
      const name = buf.toString("utf8", off, off + len);
      return { record: { type, id, kind, sourceId, sizeBytes, createdAtMs, name }, next: off + len };
    }
    case RecordType.Delete:
      return { record: { type, id }, next: off };
    case RecordType.Map:
      need(8);
      return {
        record: { type, id, chunk: buf.readUInt32LE(off), phys: buf.readUInt32LE(off + 4) },
        next: off + 8,
      };
    case RecordType.Unmap:
      need(8);
      return {
        record: { type, id, first: buf.readUInt32LE(off), count: buf.readUInt32LE(off + 4) },
        next: off + 8,
      };
    case RecordType.Resize:
      need(8);
      return { record: { type, id, sizeBytes: Number(buf.readBigUInt64LE(off)) }, next: off + 8 };
    case RecordType.CopyState:
      need(1);
      return { record: { type, id, copying: buf[off] === 1 }, next: off + 1 };
    case RecordType.MapPartial: {
      need(14);
      const chunk = buf.readUInt32LE(off);
      const phys = buf.readUInt32LE(off + 4);
      const raw = buf.readUInt32LE(off + 8);
      const len = buf.readUInt16LE(off + 12);
      off += 14;
      need(len);
      const valid = new Uint8Array(buf.subarray(off, off + len));
      const backing = raw === NO_BACKING ? -1 : raw;
      return { record: { type, id, chunk, phys, backing, valid }, next: off + len };
    }
    case RecordType.PartialValid: {
      need(2);
      const len = buf.readUInt16LE(off);
      off += 2;
      need(len);
      return { record: { type, id, valid: new Uint8Array(buf.subarray(off, off + len)) }, next: off + len };
    }
    case RecordType.PartialDone:
      return { record: { type, id }, next: off };
    case RecordType.Pending: {
      need(2);
      const len = buf.readUInt16LE(off);
      off += 2;
      need(len + 8);
      const source = buf.toString("utf8", off, off + len);
      off += len;
      const total = buf.readUInt32LE(off);
      const n = buf.readUInt32LE(off + 4);
      off += 8;
      need(8 * n);
      const ranges: [number, number][] = [];
      for (let i = 0; i < n; i++, off += 8) ranges.push([buf.readUInt32LE(off), buf.readUInt32LE(off + 4)]);
      return { record: { type, id, source, total, ranges }, next: off };
    }
    case RecordType.Fill: {
      need(4);
      const chunk = buf.readUInt32LE(off);
      const ids = readIds(off + 4);
      return { record: { type, id, chunk, ids: ids.ids }, next: ids.next };
    }
    case RecordType.FillHole: {
      const ids = readIds(off);
      return { record: { type, id, ids: ids.ids }, next: ids.next };
    }
    case RecordType.Protect: {
      need(2);
      const len = buf.readUInt16LE(off);
      off += 2;
      need(len);
      return { record: { type, id, policy: buf.toString("utf8", off, off + len) }, next: off + len };
    }
    case RecordType.Annotate: {
      const { map, next } = readMap(buf, off, buf.length);
      return { record: { type, id, map }, next };
    }
    case RecordType.Note: {
      need(2);
      const len = buf.readUInt16LE(off);
      off += 2;
      need(len + 1);
      const name = buf.toString("utf8", off, off + len);
      off += len;
      const present = buf[off++] === 1;
      if (!present) return { record: { type, id, name, map: undefined }, next: off };
      const { map, next } = readMap(buf, off, buf.length);
      return { record: { type, id, name, map }, next };
    }
    case RecordType.Pin: {
      need(1);
      const flag = buf[off]!;
      if (flag > 1) throw new SnapblockError("CORRUPT", `journal record pins with flag ${flag}`);
      return { record: { type, id, pinned: flag === 1 }, next: off + 1 };
    }
    default:
      throw new SnapblockError("CORRUPT", `unknown journal record type ${String(type)}`);
  }
}
