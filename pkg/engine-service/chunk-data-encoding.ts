import type { WireChunkData } from "./engine-messages.js";

/**
 * ChunkData messages (the pull's stream) encoded without copying their data. The protobuf
 * encoder would copy each message's data into a buffer of its own before grpc-js copies that into
 * the frame it sends; at a pull's rate those copies, and the garbage they leave, cost the serving
 * node more CPU than the bytes' encryption (bench:cluster). A message built by withHeadroom() has
 * its data read into a buffer with room in front, and its header is written into that room: the
 * encoding is a view of the buffer the data was read into.
 */

/** Bytes kept in front of the data: tags and varints of fields 1, 4 and 2's length (15 at most). */
export const HEADER_ROOM = 24;

/**
 * The buffer a message's data was read into, room included. A registered symbol, not a WeakMap:
 * the module may be loaded twice in one process (a TypeScript loader's ESM and CommonJS paths).
 */
const ROOM = Symbol.for("snapblock.chunkData.room");

type WithRoom = WireChunkData & { [ROOM]?: Buffer };

/**
 * A buffer for `length` bytes of data with the header's room in front; its data part (what the
 * caller reads into) is `buffer.subarray(HEADER_ROOM)`.
 */
export function allocWithHeadroom(length: number): Buffer {
  return Buffer.allocUnsafe(HEADER_ROOM + length);
}

/** A data message over `buffer` (from allocWithHeadroom, its data part filled). */
export function withHeadroom(chunk: number, count: number, buffer: Buffer): WireChunkData {
  const message: WithRoom = { chunk, data: buffer.subarray(HEADER_ROOM), hole: false, count };
  // Not enumerable: the usual encoder and any copy of the message ignore it.
  Object.defineProperty(message, ROOM, { value: buffer, enumerable: false });
  return message;
}

function putVarint(out: number[], value: number): void {
  let v = value;
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

/**
 * The protobuf encoding of a message built by withHeadroom (fields 1, 4, then 2: any order is
 * valid protobuf), or undefined for any other message (the usual encoder takes it).
 */
export function encodeWithHeadroom(message: WireChunkData): Buffer | undefined {
  const buffer = (message as WithRoom)[ROOM];
  if (!buffer || message.hole || buffer.length !== HEADER_ROOM + message.data.length) return undefined;
  const header: number[] = [];
  header.push(0x08); // field 1 (chunk), varint
  putVarint(header, message.chunk);
  header.push(0x20); // field 4 (count), varint
  putVarint(header, message.count ?? 1);
  header.push(0x12); // field 2 (data), length-delimited
  putVarint(header, message.data.length);
  const start = HEADER_ROOM - header.length;
  for (let i = 0; i < header.length; i++) buffer[start + i] = header[i]!;
  return buffer.subarray(start);
}
