import { SnapblockError } from "../errors/index.js";
import { NBD_MAX_PAYLOAD_DEFAULT } from "./constants.js";

/**
 * Resource bounds of the server. Every buffer the server holds on behalf of a client is bounded
 * by one of these, so a hostile or broken client costs at most a known amount of memory and time.
 */
export interface NbdLimits {
  /**
   * Largest READ or WRITE length, advertised as the maximum block size (NBD_INFO_BLOCK_SIZE).
   * proto.md "Block size constraints": lengths up to 2^25 SHOULD NOT be treated as an attack.
   */
  maxPayloadBytes: number;
  /** Requests of one connection being executed at once; beyond it the socket is not read. */
  maxInFlightRequests: number;
  /** Bytes (write payloads plus read lengths) of one connection's requests in execution. */
  maxInFlightBytes: number;
  /** Reply bytes queued on a socket the client does not read before we stop reading requests. */
  maxQueuedReplyBytes: number;
  /** Longest option payload accepted during the handshake; longer ones get NBD_REP_ERR_TOO_BIG. */
  maxOptionBytes: number;
  /** Options a client may send before it is deemed a denial of service (proto.md allows a hard disconnect). */
  maxOptionsPerConnection: number;
  /** Time a client has from connecting to entering the transmission phase. */
  handshakeTimeoutMs: number;
  /** Concurrent connections to one export; further ones are closed at once. */
  maxConnectionsPerExport: number;
  /** How long stopping an export waits for in-flight requests before closing connections hard. */
  drainTimeoutMs: number;
}

export const DEFAULT_NBD_LIMITS: Readonly<NbdLimits> = Object.freeze({
  maxPayloadBytes: NBD_MAX_PAYLOAD_DEFAULT,
  maxInFlightRequests: 64,
  maxInFlightBytes: 128 * 1024 * 1024,
  maxQueuedReplyBytes: 64 * 1024 * 1024,
  maxOptionBytes: 64 * 1024,
  maxOptionsPerConnection: 1024,
  handshakeTimeoutMs: 10_000,
  maxConnectionsPerExport: 32,
  drainTimeoutMs: 30_000,
});

/** Fills in defaults and rejects values that would break the protocol or the bounds. */
export function resolveLimits(overrides: Partial<NbdLimits> = {}): NbdLimits {
  const limits: NbdLimits = { ...DEFAULT_NBD_LIMITS };
  for (const [key, value] of Object.entries(overrides) as Array<[keyof NbdLimits, number | undefined]>) {
    if (value === undefined) continue;
    if (!Number.isSafeInteger(value) || value <= 0) {
      throw new SnapblockError(
        "INVALID_ARGUMENT",
        `NBD limit ${key} must be a positive integer, got ${value}`,
      );
    }
    limits[key] = value;
  }
  // The maximum block size is a 32-bit field and must be a multiple of a 512-byte minimum block.
  if (limits.maxPayloadBytes > 0xffff_fe00 || limits.maxPayloadBytes % 512 !== 0) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `NBD limit maxPayloadBytes must be a multiple of 512 below 4 GiB, got ${limits.maxPayloadBytes}`,
    );
  }
  return limits;
}
