import { parseByteSize } from "../pkg/byte-size/index.js";
import { isSnapblockError } from "../pkg/errors/index.js";
import { UsageError } from "./usage-error.js";

/** Block devices are whole 512-byte sectors; the engine sizes volumes in them. */
const SECTOR = 512;

/**
 * A size flag (--size 10G, --pool-size 64G): a usage error, naming the flag, for anything that is
 * not a size; with `sectors`, also for a size that is not a whole number of 512-byte sectors.
 */
export function sizeFlag(text: string, flag: string, options: { sectors?: boolean } = {}): number {
  let bytes: number;
  try {
    bytes = parseByteSize(text, flag);
  } catch (err) {
    if (isSnapblockError(err, "INVALID_ARGUMENT")) throw new UsageError(err.message);
    throw err;
  }
  if (options.sectors && bytes % SECTOR !== 0) {
    throw new UsageError(
      `${flag} ${text} is not a whole number of ${SECTOR}-byte sectors: volumes are block devices (e.g. 512M, 10G)`,
    );
  }
  return bytes;
}
