import { isSnapblockError } from "../errors/index.js";
import { NBD_EINVAL, NBD_EIO, NBD_ENOSPC, NBD_EPERM } from "./constants.js";
import type { Logger } from "../log/index.js";

/** An errno for the wire plus a message a person can act on (sent in structured error chunks). */
export interface NbdErrorReply {
  errno: number;
  message: string;
}

export interface MapBackendErrorContext {
  logger: Logger;
  exportName: string;
  command: string;
  offset: number;
  length: number;
}

/**
 * The one place where backend failures become NBD errno values (docs/design.md section 5:
 * "mapped to a transport status in exactly one place"). proto.md "Error values" restricts the
 * wire to a few values; anything we do not understand is EIO and is logged, because the client
 * only ever sees the number.
 */
export function mapBackendError(err: unknown, context: MapBackendErrorContext): NbdErrorReply {
  if (isSnapblockError(err)) {
    switch (err.code) {
      case "NO_SPACE":
        return { errno: NBD_ENOSPC, message: err.message };
      case "OUT_OF_RANGE":
      case "INVALID_ARGUMENT":
        return { errno: NBD_EINVAL, message: err.message };
      case "READ_ONLY":
        return { errno: NBD_EPERM, message: err.message };
      case "NOT_FOUND":
      case "ALREADY_EXISTS":
      case "BUSY":
      case "CORRUPT":
      case "CLOSED":
      case "CANCELLED":
      case "IO":
      case "INTERNAL":
        break;
    }
  }
  context.logger.error("nbd backend error mapped to EIO", {
    export: context.exportName,
    command: context.command,
    offset: context.offset,
    length: context.length,
    err,
  });
  const detail = err instanceof Error ? err.message : String(err);
  return { errno: NBD_EIO, message: `I/O error: ${detail}` };
}
