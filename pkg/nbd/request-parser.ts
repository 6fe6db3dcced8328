import { NBD_REQUEST_MAGIC, REQUEST_HEADER_LENGTH } from "./constants.js";

/** One transmission-phase request header (proto.md "Request message"). */
export interface NbdRequest {
  flags: number;
  type: number;
  /** Opaque 8 bytes echoed in every reply chunk; copied so it never pins a socket buffer. */
  handle: Buffer;
  /**
   * The 64-bit offset as a number. Values above 2^53 lose precision, which is harmless: they are
   * far beyond any export and are rejected by validation.
   */
  offset: number;
  length: number;
}

export type RequestHeaderParse = { ok: true; request: NbdRequest } | { ok: false; reason: string };

/** Never throws: a frame of the wrong size or with a bad magic is a value, not an exception. */
export function parseRequestHeader(frame: Buffer): RequestHeaderParse {
  if (frame.length !== REQUEST_HEADER_LENGTH) {
    return { ok: false, reason: `request header is ${frame.length} bytes, not ${REQUEST_HEADER_LENGTH}` };
  }
  const magic = frame.readUInt32BE(0);
  if (magic !== NBD_REQUEST_MAGIC) {
    return { ok: false, reason: `bad request magic 0x${magic.toString(16).padStart(8, "0")}` };
  }
  return {
    ok: true,
    request: {
      flags: frame.readUInt16BE(4),
      type: frame.readUInt16BE(6),
      handle: Buffer.from(frame.subarray(8, 16)),
      offset: Number(frame.readBigUInt64BE(16)),
      length: frame.readUInt32BE(24),
    },
  };
}
