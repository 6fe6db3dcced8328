import { SnapblockError } from "../errors/index.js";

/** proto.md "Block size constraints" as advertised in NBD_INFO_BLOCK_SIZE. */
export interface BlockSizeConstraints {
  minimum: number;
  preferred: number;
  maximum: number;
}

export interface BlockSizeInputs {
  /** 1 (the backend is byte-addressable) or 512 (emulate a disk with 512-byte sectors). */
  minimum: number;
  /** The backend's chunk size: requests aligned to it avoid read-modify-write. */
  chunkSize: number;
  /** Largest READ/WRITE length the server accepts. */
  maxPayloadBytes: number;
}

/** Preferred sizes above this are not useful to clients and only make them issue huge requests. */
const PREFERRED_CAP = 2 * 1024 * 1024;
const PREFERRED_FLOOR = 512;

/**
 * proto.md: the minimum is a power of two no larger than 64 KiB; the preferred is a power of two
 * at least max(minimum, 512); the maximum is a multiple of the minimum and at least the preferred.
 */
export function computeBlockSize(inputs: BlockSizeInputs): BlockSizeConstraints {
  if (inputs.minimum !== 1 && inputs.minimum !== 512) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `minimum block size must be 1 or 512, got ${inputs.minimum}`,
    );
  }
  const chunk = Number.isSafeInteger(inputs.chunkSize) && inputs.chunkSize > 0 ? inputs.chunkSize : 4096;
  if (inputs.maxPayloadBytes < PREFERRED_FLOOR || inputs.maxPayloadBytes % inputs.minimum !== 0) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `maximum block size ${inputs.maxPayloadBytes} is not usable`,
    );
  }
  const preferred = Math.min(
    PREFERRED_CAP,
    floorPowerOfTwo(inputs.maxPayloadBytes),
    Math.max(PREFERRED_FLOOR, inputs.minimum, floorPowerOfTwo(chunk)),
  );
  return { minimum: inputs.minimum, preferred, maximum: inputs.maxPayloadBytes };
}

function floorPowerOfTwo(value: number): number {
  let power = 1;
  while (power * 2 <= value) power *= 2;
  return power;
}
