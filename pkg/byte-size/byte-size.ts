import { SnapblockError } from "../errors/index.js";

/** Binary units, as people write sizes: 512M, 10G, 1.5T, 64K, 64KiB (case-insensitive). */
const UNITS: Record<string, number> = { "": 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 };
const NAMES = ["KiB", "MiB", "GiB", "TiB", "PiB"];

/**
 * Reads a size: a whole number of bytes, or a number with a binary unit (1073741824, 512M, 10G,
 * 1.5T, 64KiB). INVALID_ARGUMENT, naming `what`, for anything else: negative, zero, fractional
 * bytes, beyond 2^53.
 */
export function parseByteSize(text: string, what: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?$/i.exec(text.trim());
  const unit = UNITS[(match?.[2] ?? "").toUpperCase()];
  const value = match ? Number(match[1]) * (unit ?? NaN) : NaN;
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `${what} ${JSON.stringify(text)} is not a size: give a positive number of bytes or a number with a unit (examples: 1073741824, 512M, 10G, 1.5T)`,
    );
  }
  return value;
}

/** "512 B", "64 KiB", "60.1 GiB": the largest unit that keeps the number at 1 or more. */
export function formatByteSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  let value = bytes;
  let i = -1;
  while (value >= 1024 && i < NAMES.length - 1) {
    value /= 1024;
    i++;
  }
  const rounded = Math.round(value * 10) / 10;
  return `${Number.isInteger(rounded) ? rounded : rounded.toFixed(1)} ${NAMES[i]}`;
}

/** For messages: "60.1 GiB (64575504384 bytes)", exact and readable; "512 bytes" below 1 KiB. */
export function describeBytes(bytes: number): string {
  return bytes < 1024 ? `${bytes} bytes` : `${formatByteSize(bytes)} (${bytes} bytes)`;
}
