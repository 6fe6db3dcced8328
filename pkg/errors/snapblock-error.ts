/**
 * The one typed error of snapblock (docs/design.md section 5): raised where the problem is known,
 * carrying a code, a message a person can act on, and the underlying cause. It is mapped to a
 * transport status (gRPC status, NBD errno) in exactly one place per transport.
 */
/** Every engine-level error code, in one list (transports check received codes against it). */
export const ERROR_CODES = [
  "INVALID_ARGUMENT",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "OUT_OF_RANGE",
  "NO_SPACE",
  "BUSY",
  "READ_ONLY",
  "CORRUPT",
  "CLOSED",
  "CANCELLED",
  "IO",
  "INTERNAL",
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export class SnapblockError extends Error {
  override readonly name = "SnapblockError";
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

export function isSnapblockError(err: unknown, code?: ErrorCode): err is SnapblockError {
  return err instanceof SnapblockError && (code === undefined || err.code === code);
}

/** Wraps an unknown failure (an fs error, say) so callers only ever see SnapblockError. */
export function asSnapblockError(err: unknown, context: string): SnapblockError {
  if (err instanceof SnapblockError) return err;
  const errno = (err as NodeJS.ErrnoException | undefined)?.code;
  if (errno === "ENOSPC" || errno === "EDQUOT") {
    return new SnapblockError("NO_SPACE", `${context}: the disk holding the pool is full`, { cause: err });
  }
  const detail = err instanceof Error ? err.message : String(err);
  return new SnapblockError(errno ? "IO" : "INTERNAL", `${context}: ${detail}`, { cause: err });
}
