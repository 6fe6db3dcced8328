import { SnapblockError } from "../errors/index.js";
import { describeBytes as bytes } from "../byte-size/index.js";
import { MAX_VOLUME_BYTES } from "../engine-api/index.js";
import { invalidArgument } from "./request-errors.js";

/** The capacity range of a request, already checked for sign; 0 means "not specified". */
export interface CapacityRequest {
  requiredBytes: number;
  limitBytes: number;
}

/** Size of a volume created without a capacity range and without a source (CSI spec: "MAY choose"). */
export const DEFAULT_VOLUME_BYTES = 1024 ** 3;
/** New volumes are rounded up to whole MiB when the range allows (filesystem and partition alignment). */
const PREFERRED_ALIGNMENT = 1024 ** 2;
/** The engine's unit: every size is a whole number of 512-byte sectors. */
const SECTOR = 512;

interface WireRange {
  requiredBytes?: number | string | null;
  limitBytes?: number | string | null;
}

/**
 * Reads a CapacityRange message. CSI spec, CapacityRange: "The value of this field MUST NOT be
 * negative" (INVALID_ARGUMENT), and "At least one of the these fields MUST be specified".
 */
export function readCapacityRange(
  range: WireRange | null | undefined,
  field: string,
): CapacityRequest | undefined {
  if (range === null || range === undefined) return undefined;
  const requiredBytes = toSafeInteger(range.requiredBytes, `${field}.required_bytes`);
  const limitBytes = toSafeInteger(range.limitBytes, `${field}.limit_bytes`);
  if (requiredBytes === 0 && limitBytes === 0) {
    throw invalidArgument(
      `${field} is set but neither required_bytes nor limit_bytes is: specify at least one`,
    );
  }
  return { requiredBytes, limitBytes };
}

function toSafeInteger(value: number | string | null | undefined, field: string): number {
  const n = typeof value === "string" ? Number(value) : (value ?? 0);
  if (!Number.isSafeInteger(n))
    throw invalidArgument(`${field} ${String(value)} is not a whole number of bytes`);
  if (n < 0) throw invalidArgument(`${field} must not be negative (it is ${n})`);
  return n;
}

/**
 * Chooses the size of a new volume. CSI spec, CreateVolume: the capacity range "MUST always be
 * honored, even when creating volumes from a source"; a range the plugin cannot satisfy (for
 * example smaller than the source snapshot, or beyond the largest volume) is OUT_OF_RANGE.
 */
export function chooseVolumeSize(range: CapacityRequest | undefined, sourceBytes?: number): number {
  const floor = sourceBytes ?? 0;
  if (!range) return sourceBytes ?? DEFAULT_VOLUME_BYTES;
  const { requiredBytes, limitBytes } = range;
  if (limitBytes > 0 && limitBytes < requiredBytes) {
    throw outOfRange(
      `limit_bytes ${bytes(limitBytes)} is smaller than required_bytes ${bytes(requiredBytes)}`,
    );
  }
  // CSI spec, CreateVolume errors: OUT_OF_RANGE "for example when trying to create a volume
  // smaller than the source snapshot". Raising the size silently would hand back a volume larger
  // than asked for, which a caller sizing a filesystem or a quota would not expect.
  if (sourceBytes !== undefined && (requiredBytes > 0 ? requiredBytes : limitBytes) < floor) {
    const asked =
      requiredBytes > 0 ? `required_bytes ${bytes(requiredBytes)}` : `limit_bytes ${bytes(limitBytes)}`;
    throw outOfRange(
      `${asked} is smaller than the source (${bytes(floor)}): a volume cannot be smaller than what it is created from; ask for at least ${floor} bytes, or leave the size out to get the source's`,
    );
  }
  const wanted = Math.max(requiredBytes, floor);
  let size: number;
  if (wanted === 0) {
    // Only a limit: the default size, or the largest whole number of sectors under the limit.
    size = Math.min(DEFAULT_VOLUME_BYTES, roundDown(limitBytes, SECTOR));
    if (size === 0)
      throw outOfRange(`limit_bytes ${bytes(limitBytes)} is smaller than one ${SECTOR}-byte sector`);
  } else {
    size = roundUp(wanted, PREFERRED_ALIGNMENT);
    if (limitBytes > 0 && size > limitBytes) size = roundUp(wanted, SECTOR);
    if (limitBytes > 0 && size > limitBytes) {
      throw outOfRange(
        `no size between ${bytes(wanted)} and ${bytes(limitBytes)} is a whole number of ${SECTOR}-byte sectors`,
      );
    }
  }
  if (size > MAX_VOLUME_BYTES) {
    throw outOfRange(
      `${bytes(size)} exceeds the largest volume snapblock supports (${bytes(MAX_VOLUME_BYTES)})`,
    );
  }
  return size;
}

/** Whether an existing volume of this size satisfies a repeated request (CreateVolume idempotency). */
export function sizeSatisfies(sizeBytes: number, range: CapacityRequest | undefined): boolean {
  if (!range) return true;
  return sizeBytes >= range.requiredBytes && (range.limitBytes === 0 || sizeBytes <= range.limitBytes);
}

/**
 * Target size of ControllerExpandVolume / NodeExpandVolume: at least required_bytes, never above
 * limit_bytes (OUT_OF_RANGE otherwise, CSI spec "Unsupported capacity"). Volumes never shrink: a
 * request at or below the current size is already satisfied.
 */
export function chooseExpandedSize(range: CapacityRequest, currentBytes: number): number {
  const { requiredBytes, limitBytes } = range;
  if (limitBytes > 0 && limitBytes < requiredBytes) {
    throw outOfRange(
      `limit_bytes ${bytes(limitBytes)} is smaller than required_bytes ${bytes(requiredBytes)}`,
    );
  }
  if (limitBytes > 0 && limitBytes < currentBytes) {
    throw outOfRange(
      `limit_bytes ${bytes(limitBytes)} is below the volume's current size ${bytes(currentBytes)}: volumes never shrink`,
    );
  }
  if (requiredBytes <= currentBytes) return currentBytes;
  const size = roundUp(requiredBytes, SECTOR);
  if (limitBytes > 0 && size > limitBytes) {
    throw outOfRange(
      `no size between ${bytes(requiredBytes)} and ${bytes(limitBytes)} is a whole number of ${SECTOR}-byte sectors`,
    );
  }
  if (size > MAX_VOLUME_BYTES) {
    throw outOfRange(
      `${bytes(size)} exceeds the largest volume snapblock supports (${bytes(MAX_VOLUME_BYTES)})`,
    );
  }
  return size;
}

function outOfRange(message: string): SnapblockError {
  return new SnapblockError("OUT_OF_RANGE", `capacity_range cannot be satisfied: ${message}`);
}

function roundUp(n: number, unit: number): number {
  return Math.ceil(n / unit) * unit;
}

function roundDown(n: number, unit: number): number {
  return Math.floor(n / unit) * unit;
}
