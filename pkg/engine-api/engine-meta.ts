import { SnapblockError } from "../errors/index.js";
import type { EngineMeta } from "./engine-api.js";

/**
 * Bounds of the metadata a caller may keep with a volume or snapshot. Every entry is a journal
 * record of the node's pool and part of every checkpoint, which the pool holds in memory, so an
 * unbounded map would let one call make every later one slow (a review sent 3 MB). The CSI spec ("Size Limits") bounds a
 * string field at 128 bytes and a map<string, string> at 4 KiB; one engine map carries several
 * CSI fields together (the name, the capabilities with their mount flags, the content source, and
 * for a snapshot replica where its copies are), so it gets four CSI maps' worth.
 */
export const META_KEY_MAX_BYTES = 128;
export const META_MAX_BYTES = 16 * 1024;

/** INVALID_ARGUMENT when `meta` is not a map of string to string within the bounds above. */
export function checkEngineMeta(meta: EngineMeta, what: string): void {
  let total = 0;
  for (const [key, value] of Object.entries(meta)) {
    if (key === "") throw new SnapblockError("INVALID_ARGUMENT", `${what} metadata has an empty key`);
    if (typeof value !== "string")
      throw new SnapblockError("INVALID_ARGUMENT", `${what} metadata ${JSON.stringify(key)} is not a string`);
    const keyBytes = Buffer.byteLength(key);
    if (keyBytes > META_KEY_MAX_BYTES) {
      throw new SnapblockError(
        "INVALID_ARGUMENT",
        `${what} metadata key ${JSON.stringify(key.slice(0, 40))}... is ${keyBytes} bytes, more than ${META_KEY_MAX_BYTES}`,
      );
    }
    total += keyBytes + Buffer.byteLength(value);
  }
  if (total > META_MAX_BYTES) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `${what} metadata is ${total} bytes (keys and values), more than ${META_MAX_BYTES}`,
    );
  }
}
