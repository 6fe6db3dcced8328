import { createHash } from "node:crypto";
import path from "node:path";
import { SnapblockError } from "../errors/index.js";
import { MAX_UNIX_PATH_BYTES } from "../files/index.js";

/**
 * The unix socket of an export in `dir`: `<name>.sock` while it fits sun_path, else a hash of the
 * name (engine names may be 253 bytes long).
 */
export function socketPathFor(dir: string, name: string): string {
  const readable = path.join(dir, `${name}.sock`);
  if (Buffer.byteLength(readable) <= MAX_UNIX_PATH_BYTES) return readable;
  const short = path.join(dir, `${createHash("sha256").update(name).digest("hex").slice(0, 16)}.sock`);
  if (Buffer.byteLength(short) > MAX_UNIX_PATH_BYTES) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `NBD socket directory ${dir} is too long for unix socket paths (${MAX_UNIX_PATH_BYTES} bytes)`,
    );
  }
  return short;
}
