import {
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  SIMPLE_REPLY_HEADER_LENGTH,
  STRUCTURED_REPLY_HEADER_LENGTH,
} from "./constants.js";
import { encodeString } from "./option-reply.js";

/**
 * Encoders for transmission-phase replies (proto.md "Simple reply message", "Structured reply
 * chunk message", "Structured reply types"). Data payloads are returned as separate buffers so
 * that read data is never copied.
 */

/** A status descriptor of NBD_REPLY_TYPE_BLOCK_STATUS. */
export interface StatusDescriptor {
  length: number;
  flags: number;
}

export function encodeSimpleReply(handle: Buffer, errno: number): Buffer {
  const out = Buffer.alloc(SIMPLE_REPLY_HEADER_LENGTH);
  out.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  out.writeUInt32BE(errno, 4);
  handle.copy(out, 8, 0, 8);
  return out;
}

function structuredHeader(handle: Buffer, flags: number, type: number, length: number, extra = 0): Buffer {
  const out = Buffer.alloc(STRUCTURED_REPLY_HEADER_LENGTH + extra);
  out.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  out.writeUInt16BE(flags, 4);
  out.writeUInt16BE(type, 6);
  handle.copy(out, 8, 0, 8);
  out.writeUInt32BE(length, 16);
  return out;
}

function doneFlag(done: boolean): number {
  return done ? NBD_REPLY_FLAG_DONE : 0;
}

/** NBD_REPLY_TYPE_NONE: MUST carry NBD_REPLY_FLAG_DONE. */
export function encodeStructuredNone(handle: Buffer): Buffer {
  return structuredHeader(handle, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 0);
}

/** NBD_REPLY_TYPE_ERROR: errno, message length, message. Always the final chunk here. */
export function encodeStructuredError(handle: Buffer, errno: number, message: string): Buffer {
  // The message length is a 16-bit field and the string limit is 4096 bytes.
  const text = encodeString(message);
  const out = structuredHeader(
    handle,
    NBD_REPLY_FLAG_DONE,
    NBD_REPLY_TYPE_ERROR,
    6 + text.length,
    6 + text.length,
  );
  out.writeUInt32BE(errno, STRUCTURED_REPLY_HEADER_LENGTH);
  out.writeUInt16BE(text.length, STRUCTURED_REPLY_HEADER_LENGTH + 4);
  text.copy(out, STRUCTURED_REPLY_HEADER_LENGTH + 6);
  return out;
}

/** NBD_REPLY_TYPE_OFFSET_DATA: 64-bit offset then the data (returned as a second buffer). */
export function encodeOffsetData(handle: Buffer, offset: number, data: Buffer, done: boolean): Buffer[] {
  const head = structuredHeader(handle, doneFlag(done), NBD_REPLY_TYPE_OFFSET_DATA, 8 + data.length, 8);
  head.writeBigUInt64BE(BigInt(offset), STRUCTURED_REPLY_HEADER_LENGTH);
  return [head, data];
}

/** NBD_REPLY_TYPE_OFFSET_HOLE: 64-bit offset and 32-bit nonzero hole size. */
export function encodeOffsetHole(handle: Buffer, offset: number, length: number, done: boolean): Buffer {
  const out = structuredHeader(handle, doneFlag(done), NBD_REPLY_TYPE_OFFSET_HOLE, 12, 12);
  out.writeBigUInt64BE(BigInt(offset), STRUCTURED_REPLY_HEADER_LENGTH);
  out.writeUInt32BE(length, STRUCTURED_REPLY_HEADER_LENGTH + 8);
  return out;
}

/** NBD_REPLY_TYPE_BLOCK_STATUS: context id, then (length, flags) descriptors. */
export function encodeBlockStatus(
  handle: Buffer,
  contextId: number,
  descriptors: readonly StatusDescriptor[],
  done: boolean,
): Buffer {
  const payload = 4 + 8 * descriptors.length;
  const out = structuredHeader(handle, doneFlag(done), NBD_REPLY_TYPE_BLOCK_STATUS, payload, payload);
  let position = STRUCTURED_REPLY_HEADER_LENGTH;
  out.writeUInt32BE(contextId, position);
  position += 4;
  for (const descriptor of descriptors) {
    out.writeUInt32BE(descriptor.length, position);
    out.writeUInt32BE(descriptor.flags, position + 4);
    position += 8;
  }
  return out;
}

/**
 * An error reply in whichever form the connection negotiated. proto.md "Structured reply chunk
 * message": with structured replies errors SHOULD be structured (they carry a message), and
 * READ MUST never get a simple reply.
 */
export function encodeErrorReply(
  handle: Buffer,
  errno: number,
  message: string,
  structured: boolean,
): Buffer {
  return structured ? encodeStructuredError(handle, errno, message) : encodeSimpleReply(handle, errno);
}
