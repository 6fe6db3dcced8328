import { MAX_STRING_BYTES, NBD_OPTS_MAGIC } from "./constants.js";

/**
 * Pure parsers for what the client sends during option haggling (proto.md "Option types").
 * They never throw on any input: malformed data is a value the handshake turns into
 * NBD_REP_ERR_INVALID or a hard disconnect.
 */

export type ParseResult<T> = { ok: true; value: T } | { ok: false; message: string };

export interface OptionHeader {
  /** False when the frame does not start with IHAVEOPT: the stream is out of sync. */
  magicOk: boolean;
  option: number;
  length: number;
}

/** proto.md "Newstyle negotiation": IHAVEOPT, 32-bit option, 32-bit length. */
export function parseOptionHeader(frame: Buffer): OptionHeader {
  if (frame.length < 16) return { magicOk: false, option: 0, length: 0 };
  return {
    magicOk: frame.readBigUInt64BE(0) === NBD_OPTS_MAGIC,
    option: frame.readUInt32BE(8),
    length: frame.readUInt32BE(12),
  };
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** proto.md "Conventions": UTF-8, no NUL, at most 4096 bytes. */
export function decodeString(bytes: Buffer, what: string): ParseResult<string> {
  if (bytes.length > MAX_STRING_BYTES) {
    return { ok: false, message: `${what} is ${bytes.length} bytes, longer than the 4096 allowed` };
  }
  if (bytes.includes(0)) return { ok: false, message: `${what} contains a NUL byte` };
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch (err) {
    return { ok: false, message: `${what} is not valid UTF-8 (${(err as Error).message})` };
  }
  return { ok: true, value: text };
}

export interface InfoRequest {
  name: string;
  /** Information types requested, duplicates removed. */
  infoTypes: number[];
}

/**
 * proto.md "NBD_OPT_INFO and NBD_OPT_GO": 32-bit name length, name, 16-bit count, count 16-bit
 * information types. The lengths must add up to the option length exactly.
 */
export function parseInfoRequest(data: Buffer): ParseResult<InfoRequest> {
  if (data.length < 6) return { ok: false, message: `option data of ${data.length} bytes is shorter than 6` };
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 6) {
    return { ok: false, message: `export name length ${nameLength} exceeds the option data` };
  }
  const name = decodeString(data.subarray(4, 4 + nameLength), "export name");
  if (!name.ok) return name;
  const count = data.readUInt16BE(4 + nameLength);
  const expected = 4 + nameLength + 2 + 2 * count;
  if (expected !== data.length) {
    return { ok: false, message: `option data is ${data.length} bytes but its fields add up to ${expected}` };
  }
  const infoTypes = new Set<number>();
  for (let i = 0; i < count; i += 1) infoTypes.add(data.readUInt16BE(4 + nameLength + 2 + 2 * i));
  return { ok: true, value: { name: name.value, infoTypes: [...infoTypes] } };
}

export interface MetaContextRequest {
  exportName: string;
  queries: string[];
}

/**
 * proto.md "NBD_OPT_LIST_META_CONTEXT" / "NBD_OPT_SET_META_CONTEXT": 32-bit name length, name,
 * 32-bit query count, then each query as 32-bit length and string. A length that reaches past
 * the option data is syntactically invalid.
 */
export function parseMetaContextRequest(data: Buffer): ParseResult<MetaContextRequest> {
  if (data.length < 8) return { ok: false, message: `option data of ${data.length} bytes is shorter than 8` };
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 8) {
    return { ok: false, message: `export name length ${nameLength} exceeds the option data` };
  }
  const exportName = decodeString(data.subarray(4, 4 + nameLength), "export name");
  if (!exportName.ok) return exportName;
  let position = 4 + nameLength;
  const count = data.readUInt32BE(position);
  position += 4;
  // Each query takes at least its 4-byte length: bound the count before looping on it.
  if (count > (data.length - position) / 4) {
    return { ok: false, message: `${count} queries cannot fit in the option data` };
  }
  const queries: string[] = [];
  for (let i = 0; i < count; i += 1) {
    if (position + 4 > data.length) return { ok: false, message: `query ${i} is cut off` };
    const queryLength = data.readUInt32BE(position);
    position += 4;
    if (queryLength > data.length - position) {
      return { ok: false, message: `query ${i} length ${queryLength} exceeds the option data` };
    }
    const query = decodeString(data.subarray(position, position + queryLength), `query ${i}`);
    if (!query.ok) return query;
    queries.push(query.value);
    position += queryLength;
  }
  if (position !== data.length) {
    return { ok: false, message: `${data.length - position} bytes follow the last query` };
  }
  return { ok: true, value: { exportName: exportName.value, queries } };
}
