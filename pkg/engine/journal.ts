import { crc32 } from "node:zlib";
import { SnapblockError } from "../errors/index.js";
import { decodeRecord, encodeRecord, encodedSize, type MetaRecord } from "./records.js";
import { readFully, type StorageFile } from "./storage.js";

/**
 * The journal: an append-only file of record batches, one batch per commit. A batch is durable
 * once the fdatasync after its append returns; a batch torn by a crash fails its checksum and
 * ends the replay (commits are serialized, so nothing durable can follow a torn batch).
 *
 * File header (64 bytes): magic "SBJRNL01", pool uuid (16), base sequence (u64: records in this
 * journal have larger sequence numbers), crc32 of the preceding 32 bytes.
 * Batch: magic u32 0x4254424a, payload length u32, first sequence u64, record count u32,
 * crc32 u32 over the 20 header bytes before it and the payload; then the payload (records).
 */
export const JOURNAL_HEADER_SIZE = 64;
const JOURNAL_MAGIC = "SBJRNL01";
const BATCH_MAGIC = 0x4254424a;
const BATCH_HEADER = 24;

export function encodeJournalHeader(uuid: Buffer, baseSeq: number): Buffer {
  const buf = Buffer.alloc(JOURNAL_HEADER_SIZE);
  buf.write(JOURNAL_MAGIC, 0, "latin1");
  uuid.copy(buf, 8);
  buf.writeBigUInt64LE(BigInt(baseSeq), 24);
  buf.writeUInt32LE(crc32(buf.subarray(0, 32)), 32);
  return buf;
}

export function encodeBatch(firstSeq: number, records: readonly MetaRecord[]): Buffer {
  let size = 0;
  for (const r of records) size += encodedSize(r);
  const buf = Buffer.alloc(BATCH_HEADER + size);
  let off = BATCH_HEADER;
  for (const r of records) off = encodeRecord(r, buf, off);
  buf.writeUInt32LE(BATCH_MAGIC, 0);
  buf.writeUInt32LE(size, 4);
  buf.writeBigUInt64LE(BigInt(firstSeq), 8);
  buf.writeUInt32LE(records.length, 16);
  buf.writeUInt32LE(crc32(buf.subarray(BATCH_HEADER), crc32(buf.subarray(0, 20))), 20);
  return buf;
}

export interface JournalScan {
  baseSeq: number;
  /** Valid batches in file order. */
  batches: { firstSeq: number; records: MetaRecord[] }[];
  /** Byte offset just past the last valid batch: where the next append goes. */
  validEnd: number;
  /** Bytes after `validEnd` (a torn or unfinished batch). */
  tornBytes: number;
}

/** Reads a journal, stopping at the first batch that is incomplete or fails its checksum. */
export async function scanJournal(file: StorageFile, uuid: Buffer): Promise<JournalScan> {
  const size = await file.size();
  const all = await readFully(file, 0, size);
  if (all.length < JOURNAL_HEADER_SIZE || all.toString("latin1", 0, 8) !== JOURNAL_MAGIC) {
    throw new SnapblockError("CORRUPT", "journal header is missing or damaged");
  }
  if (all.readUInt32LE(32) !== crc32(all.subarray(0, 32))) {
    throw new SnapblockError("CORRUPT", "journal header checksum mismatch");
  }
  if (!all.subarray(8, 24).equals(uuid)) {
    throw new SnapblockError("CORRUPT", "journal belongs to another pool (uuid mismatch)");
  }
  const baseSeq = Number(all.readBigUInt64LE(24));
  const batches: JournalScan["batches"] = [];
  let off = JOURNAL_HEADER_SIZE;
  while (off + BATCH_HEADER <= all.length) {
    if (all.readUInt32LE(off) !== BATCH_MAGIC) break;
    const len = all.readUInt32LE(off + 4);
    if (off + BATCH_HEADER + len > all.length) break;
    const payload = all.subarray(off + BATCH_HEADER, off + BATCH_HEADER + len);
    if (all.readUInt32LE(off + 20) !== crc32(payload, crc32(all.subarray(off, off + 20)))) break;
    const firstSeq = Number(all.readBigUInt64LE(off + 8));
    const count = all.readUInt32LE(off + 16);
    const records: MetaRecord[] = [];
    let p = 0;
    for (let i = 0; i < count; i++) {
      const { record, next } = decodeRecord(payload, p);
      records.push(record);
      p = next;
    }
    batches.push({ firstSeq, records });
    off += BATCH_HEADER + len;
  }
  return { baseSeq, batches, validEnd: off, tornBytes: all.length - off };
}
