import { createHash } from "node:crypto";
import { invalidArgument } from "./request-errors.js";

/**
 * CSI names (CreateVolumeRequest.name, CreateSnapshotRequest.name) are any Unicode string except
 * some control characters (CSI spec, CreateVolume: "banned characters U+0000-U+0008, U+000B,
 * U+000C, U+000E-U+001F, U+007F-U+009F"). Engine names are [A-Za-z0-9][A-Za-z0-9._-]{0,252} and
 * become NBD export names and log fields.
 *
 * The mapping is deterministic, so that a retried CreateVolume finds what an earlier attempt made
 * without any lookup table, and injective (up to SHA-256 collisions):
 * - a name that is already a valid engine name of at most KEEP_MAX characters, and does not start
 *   with the hash prefix or the recovery-point prefix, is kept as is (what the upstream sidecars send, "pvc-<uuid>" and
 *   "snapshot-<uuid>", stays readable);
 * - any other name becomes HASH_PREFIX + 40 hex digits of its SHA-256.
 * The CSI name itself is kept in the volume's metadata for listing and idempotency checks.
 */
export const KEEP_MAX = 64;
export const HASH_PREFIX = "h--";
/**
 * Engine names starting with this are the engine's recovery points (docs/protection.md); a CSI
 * name that starts with it is hashed like one that looks like a hash, so the two never meet.
 */
export const POINT_PREFIX = "rp--";
const ENGINE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;
// eslint-disable-next-line no-control-regex -- the banned characters are control characters
const BANNED = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]/u;
/** Names longer than this are refused: far beyond any CO's, and bounded log/metadata size. */
export const CSI_NAME_MAX_BYTES = 1024;

export function validateCsiName(name: string, what: string): string {
  if (name.length === 0) throw invalidArgument(`${what} name is required`);
  if (Buffer.byteLength(name, "utf8") > CSI_NAME_MAX_BYTES) {
    throw invalidArgument(`${what} name is longer than ${CSI_NAME_MAX_BYTES} bytes`);
  }
  if (BANNED.test(name)) {
    throw invalidArgument(
      `${what} name contains a control character the CSI spec bans (U+0000-U+0008, U+000B, U+000C, U+000E-U+001F, U+007F-U+009F)`,
    );
  }
  return name;
}

export function engineNameFor(csiName: string): string {
  if (
    csiName.length <= KEEP_MAX &&
    ENGINE_NAME.test(csiName) &&
    !csiName.startsWith(HASH_PREFIX) &&
    !csiName.startsWith(POINT_PREFIX)
  ) {
    return csiName;
  }
  return HASH_PREFIX + createHash("sha256").update(csiName, "utf8").digest("hex").slice(0, 40);
}

export function isEngineName(name: string): boolean {
  return ENGINE_NAME.test(name);
}
