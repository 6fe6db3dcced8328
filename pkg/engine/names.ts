import { SnapblockError } from "../errors/index.js";

/**
 * Volume and snapshot names: 1 to 253 characters (a Kubernetes object name fits), letters, digits,
 * '.', '_' and '-', starting with a letter or digit. Names appear in file-free metadata only, but
 * they also become NBD export names and log fields, so nothing that needs quoting is allowed.
 */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;

export function validateName(name: unknown, what: string): string {
  if (typeof name !== "string" || name.length === 0) {
    throw new SnapblockError("INVALID_ARGUMENT", `${what} name is required`);
  }
  if (!NAME.test(name)) {
    const shown = JSON.stringify(name.length > 64 ? `${name.slice(0, 64)}...` : name);
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `${what} name ${shown} is invalid: use 1-253 letters, digits, '.', '_' or '-', starting with a letter or digit`,
    );
  }
  return name;
}

/** Sizes are positive whole multiples of 512 bytes (the sector every block layer uses). */
export const MAX_DEVICE_BYTES = 2 ** 50;

export function validateSize(size: unknown, what: string): number {
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size <= 0) {
    throw new SnapblockError("INVALID_ARGUMENT", `${what} must be a positive whole number of bytes`);
  }
  if (size % 512 !== 0) {
    throw new SnapblockError("INVALID_ARGUMENT", `${what} ${size} is not a multiple of 512 bytes`);
  }
  if (size > MAX_DEVICE_BYTES) {
    throw new SnapblockError(
      "OUT_OF_RANGE",
      `${what} ${size} exceeds the maximum of ${MAX_DEVICE_BYTES} bytes (1 PiB)`,
    );
  }
  return size;
}
