import { randomUUID } from "node:crypto";
import { crc32 } from "node:zlib";
import { SnapblockError } from "../errors/index.js";

/**
 * The superblock: the pool's identity and geometry, written once at creation (file `superblock`,
 * 4096 bytes, little-endian; see docs/engine-format.md).
 */
export const SUPERBLOCK_SIZE = 4096;
const MAGIC = "SBPOOL01";
export const FORMAT_VERSION = 1;

export interface Superblock {
  version: number;
  chunkSize: number;
  capacityChunks: number;
  uuid: Buffer; // 16 bytes
  createdAtMs: number;
}

export function newSuperblock(chunkSize: number, capacityChunks: number): Superblock {
  return {
    version: FORMAT_VERSION,
    chunkSize,
    capacityChunks,
    uuid: Buffer.from(randomUUID().replaceAll("-", ""), "hex"),
    createdAtMs: Date.now(),
  };
}

export function encodeSuperblock(sb: Superblock): Buffer {
  const buf = Buffer.alloc(SUPERBLOCK_SIZE);
  buf.write(MAGIC, 0, "latin1");
  buf.writeUInt32LE(sb.version, 8);
  buf.writeUInt32LE(sb.chunkSize, 12);
  buf.writeUInt32LE(sb.capacityChunks, 16);
  sb.uuid.copy(buf, 20);
  buf.writeBigUInt64LE(BigInt(sb.createdAtMs), 36);
  buf.writeUInt32LE(crc32(buf.subarray(0, 44)), 44);
  return buf;
}

export function decodeSuperblock(buf: Buffer, where: string): Superblock {
  if (buf.length < 48 || buf.toString("latin1", 0, 8) !== MAGIC) {
    throw new SnapblockError("CORRUPT", `${where} is not a snapblock pool (bad superblock magic)`);
  }
  if (buf.readUInt32LE(44) !== crc32(buf.subarray(0, 44))) {
    throw new SnapblockError("CORRUPT", `${where}: superblock checksum mismatch`);
  }
  const version = buf.readUInt32LE(8);
  if (version !== FORMAT_VERSION) {
    throw new SnapblockError(
      "CORRUPT",
      `${where}: pool format version ${version}, this build reads ${FORMAT_VERSION}`,
    );
  }
  return {
    version,
    chunkSize: buf.readUInt32LE(12),
    capacityChunks: buf.readUInt32LE(16),
    uuid: Buffer.from(buf.subarray(20, 36)),
    createdAtMs: Number(buf.readBigUInt64LE(36)),
  };
}
