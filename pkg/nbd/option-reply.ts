import {
  EXPORT_NAME_ZERO_PADDING,
  GREETING_LENGTH,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_INIT_MAGIC,
  NBD_OPTS_MAGIC,
  NBD_REP_INFO,
  NBD_REP_MAGIC,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  OPTION_REPLY_HEADER_LENGTH,
} from "./constants.js";
import type { BlockSizeConstraints } from "./block-size.js";

/** Encoders for the server's side of the handshake (proto.md "Handshake", "Option reply types"). */

/** proto.md "Newstyle negotiation": NBDMAGIC, IHAVEOPT, handshake flags. */
export function encodeGreeting(): Buffer {
  const out = Buffer.alloc(GREETING_LENGTH);
  out.writeBigUInt64BE(NBD_INIT_MAGIC, 0);
  out.writeBigUInt64BE(NBD_OPTS_MAGIC, 8);
  out.writeUInt16BE(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES, 16);
  return out;
}

/** proto.md "Fixed newstyle negotiation": one option reply (header plus data). */
export function encodeOptionReply(option: number, replyType: number, data?: Buffer): Buffer {
  const length = data?.length ?? 0;
  const out = Buffer.alloc(OPTION_REPLY_HEADER_LENGTH + length);
  out.writeBigUInt64BE(NBD_REP_MAGIC, 0);
  out.writeUInt32BE(option >>> 0, 8);
  out.writeUInt32BE(replyType >>> 0, 12);
  out.writeUInt32BE(length, 16);
  data?.copy(out, OPTION_REPLY_HEADER_LENGTH);
  return out;
}

/** An error reply carries a human-readable message (proto.md "Option reply types"). */
export function encodeOptionError(option: number, replyType: number, message: string): Buffer {
  return encodeOptionReply(option, replyType, encodeString(message));
}

/** proto.md "NBD_REP_SERVER": name length, name, then a free-form description. */
export function encodeServerReply(option: number, name: string, description: string): Buffer {
  const nameBytes = Buffer.from(name, "utf8");
  const descriptionBytes = encodeString(description);
  const data = Buffer.alloc(4 + nameBytes.length + descriptionBytes.length);
  data.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(data, 4);
  descriptionBytes.copy(data, 4 + nameBytes.length);
  return encodeOptionReply(option, NBD_REP_SERVER, data);
}

/** proto.md "NBD_INFO_EXPORT": size and transmission flags. */
export function encodeInfoExport(option: number, size: number, transmissionFlags: number): Buffer {
  const data = Buffer.alloc(12);
  data.writeUInt16BE(NBD_INFO_EXPORT, 0);
  data.writeBigUInt64BE(BigInt(size), 2);
  data.writeUInt16BE(transmissionFlags, 10);
  return encodeOptionReply(option, NBD_REP_INFO, data);
}

/** proto.md "NBD_INFO_NAME" and "NBD_INFO_DESCRIPTION": a type and a string. */
export function encodeInfoString(
  option: number,
  infoType: typeof NBD_INFO_NAME | typeof NBD_INFO_DESCRIPTION,
  text: string,
): Buffer {
  const textBytes = encodeString(text);
  const data = Buffer.alloc(2 + textBytes.length);
  data.writeUInt16BE(infoType, 0);
  textBytes.copy(data, 2);
  return encodeOptionReply(option, NBD_REP_INFO, data);
}

/** proto.md "NBD_INFO_BLOCK_SIZE": minimum, preferred, maximum. */
export function encodeInfoBlockSize(option: number, constraints: BlockSizeConstraints): Buffer {
  const data = Buffer.alloc(14);
  data.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
  data.writeUInt32BE(constraints.minimum, 2);
  data.writeUInt32BE(constraints.preferred, 6);
  data.writeUInt32BE(constraints.maximum, 10);
  return encodeOptionReply(option, NBD_REP_INFO, data);
}

/** proto.md "NBD_REP_META_CONTEXT": context id and name. */
export function encodeMetaContextReply(option: number, contextId: number, name: string): Buffer {
  const nameBytes = Buffer.from(name, "utf8");
  const data = Buffer.alloc(4 + nameBytes.length);
  data.writeUInt32BE(contextId, 0);
  nameBytes.copy(data, 4);
  return encodeOptionReply(option, NBD_REP_META_CONTEXT, data);
}

/** proto.md "NBD_OPT_EXPORT_NAME": size, flags and (unless NO_ZEROES) 124 zero bytes. */
export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const out = Buffer.alloc(10 + (noZeroes ? 0 : EXPORT_NAME_ZERO_PADDING));
  out.writeBigUInt64BE(BigInt(size), 0);
  out.writeUInt16BE(transmissionFlags, 8);
  return out;
}

/** Strings on the wire are UTF-8 and at most 4096 bytes (proto.md "Conventions"); cut longer ones. */
export function encodeString(text: string): Buffer {
  const bytes = Buffer.from(text, "utf8");
  if (bytes.length <= 4096) return bytes;
  // Cut on a character boundary so the result stays valid UTF-8.
  let end = 4096;
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end -= 1;
  return bytes.subarray(0, end);
}
