import { SnapblockError } from "../errors/index.js";

/**
 * String maps: annotations of devices and entries of note tables (records ANNOTATE and NOTE,
 * checkpoint sections 6 and 7). Keys and values are opaque to the engine; the layer above keeps
 * what it needs to survive with the pool in them (the CSI layer: names, capabilities, sources).
 */
export type StringMap = Readonly<Record<string, string>>;

/** Bounds that keep a record encodable and a batch small: checked before anything is recorded. */
const MAX_KEY_BYTES = 1024;
const MAX_MAP_BYTES = 256 * 1024;
const MAX_KEYS = 4096;

/** INVALID_ARGUMENT unless `map` is a plain map of string to string within the bounds above. */
export function validateStringMap(map: unknown, what: string): StringMap {
  if (map === null || typeof map !== "object" || Array.isArray(map)) {
    throw new SnapblockError("INVALID_ARGUMENT", `${what} must be a map of strings`);
  }
  const entries = Object.entries(map as Record<string, unknown>);
  if (entries.length > MAX_KEYS) {
    throw new SnapblockError("INVALID_ARGUMENT", `${what} has ${entries.length} keys, more than ${MAX_KEYS}`);
  }
  let total = 0;
  for (const [key, value] of entries) {
    if (typeof value !== "string") {
      throw new SnapblockError(
        "INVALID_ARGUMENT",
        `${what}: the value of ${JSON.stringify(key)} is not a string`,
      );
    }
    const keyBytes = Buffer.byteLength(key, "utf8");
    if (keyBytes > MAX_KEY_BYTES) {
      throw new SnapblockError(
        "INVALID_ARGUMENT",
        `${what}: a key is ${keyBytes} bytes, more than ${MAX_KEY_BYTES}`,
      );
    }
    total += keyBytes + Buffer.byteLength(value, "utf8");
  }
  if (total > MAX_MAP_BYTES) {
    throw new SnapblockError("INVALID_ARGUMENT", `${what} is ${total} bytes, more than ${MAX_MAP_BYTES}`);
  }
  return map as StringMap;
}

/** u16 pair count, then per pair u16 + UTF-8 key, u32 + UTF-8 value. */
export function mapSize(map: StringMap): number {
  let n = 2;
  for (const [k, v] of Object.entries(map))
    n += 2 + Buffer.byteLength(k, "utf8") + 4 + Buffer.byteLength(v, "utf8");
  return n;
}

export function writeMap(buf: Buffer, off: number, map: StringMap): number {
  const entries = Object.entries(map);
  off = buf.writeUInt16LE(entries.length, off);
  for (const [k, v] of entries) {
    const klen = buf.write(k, off + 2, "utf8");
    buf.writeUInt16LE(klen, off);
    off += 2 + klen;
    const vlen = buf.write(v, off + 4, "utf8");
    buf.writeUInt32LE(vlen, off);
    off += 4 + vlen;
  }
  return off;
}

/**
 * Reads a string map written by writeMap at `off` of `buf[0, end)`; returns it and the offset
 * after it. Throws CORRUPT when it runs past `end`.
 */
export function readMap(
  buf: Buffer,
  off: number,
  end: number,
): { map: Record<string, string>; next: number } {
  const need = (n: number): void => {
    if (off + n > end) throw new SnapblockError("CORRUPT", "string map runs past its record");
  };
  need(2);
  const count = buf.readUInt16LE(off);
  off += 2;
  const map: Record<string, string> = {};
  for (let i = 0; i < count; i++) {
    need(2);
    const klen = buf.readUInt16LE(off);
    off += 2;
    need(klen + 4);
    const key = buf.toString("utf8", off, off + klen);
    off += klen;
    const vlen = buf.readUInt32LE(off);
    off += 4;
    need(vlen);
    // defineProperty, not assignment: a key "__proto__" is data like any other.
    Object.defineProperty(map, key, {
      value: buf.toString("utf8", off, off + vlen),
      enumerable: true,
      writable: true,
      configurable: true,
    });
    off += vlen;
  }
  return { map, next: off };
}
