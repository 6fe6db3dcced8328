import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_EPERM,
} from "./constants.js";
import type { NbdRequest } from "./request-parser.js";

/** What a request is checked against; `size` is read afresh for every request (volumes grow). */
export interface RequestContext {
  size: number;
  readOnly: boolean;
  structuredReplies: boolean;
  /** base:allocation was selected during negotiation. */
  metaContextSelected: boolean;
  minimumBlockSize: number;
  maxPayloadBytes: number;
}

export type RequestVerdict = { ok: true } | { ok: false; errno: number; message: string };

const OK: RequestVerdict = { ok: true };

/**
 * Which command flags each command accepts. proto.md "Command flags": FUA is valid on every
 * command once NBD_FLAG_SEND_FUA is advertised (which it always is); the others belong to one
 * command each.
 */
function allowedFlags(type: number, context: RequestContext): number {
  switch (type) {
    case NBD_CMD_READ:
      // NBD_FLAG_SEND_DF is only advertised with structured replies.
      return NBD_CMD_FLAG_FUA | (context.structuredReplies ? NBD_CMD_FLAG_DF : 0);
    case NBD_CMD_WRITE_ZEROES:
      return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
    case NBD_CMD_BLOCK_STATUS:
      return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE;
    default:
      return NBD_CMD_FLAG_FUA;
  }
}

/**
 * Checks a request before any payload is accepted or any backend call is made, with the errno
 * proto.md asks for ("Error values", "Block size constraints"): EINVAL for unknown commands or
 * flags, misalignment, oversize, and reads/trims/status beyond the end; ENOSPC for writes and
 * write-zeroes beyond the end; EPERM for modifications of a read-only export.
 * NBD_CMD_DISC is never validated: it is handled before this is called.
 */
export function validateRequest(request: NbdRequest, context: RequestContext): RequestVerdict {
  const { type, flags, offset, length } = request;
  if (!isKnownCommand(type)) return fail(NBD_EINVAL, `unknown command ${type}`);
  const stray = flags & ~allowedFlags(type, context);
  if (stray !== 0) return fail(NBD_EINVAL, `flags 0x${stray.toString(16)} are not valid for this command`);

  const end = offset + length;
  const beyondEnd = !Number.isSafeInteger(end) || end > context.size;
  const misaligned =
    context.minimumBlockSize > 1 &&
    (offset % context.minimumBlockSize !== 0 || length % context.minimumBlockSize !== 0);
  const range = `range ${offset}+${length}`;

  switch (type) {
    case NBD_CMD_FLUSH:
      // Offset and length are reserved (MUST be zero); ignoring them harms no one.
      return OK;
    case NBD_CMD_READ:
      if (length > context.maxPayloadBytes) {
        return fail(
          NBD_EINVAL,
          `read of ${length} bytes exceeds the maximum block size ${context.maxPayloadBytes}`,
        );
      }
      if (beyondEnd)
        return fail(NBD_EINVAL, `${range} is beyond the end of the export (${context.size} bytes)`);
      if (misaligned) return fail(NBD_EINVAL, `${range} is not aligned to ${context.minimumBlockSize} bytes`);
      return OK;
    case NBD_CMD_WRITE:
      if (length > context.maxPayloadBytes) {
        return fail(
          NBD_EINVAL,
          `write of ${length} bytes exceeds the maximum block size ${context.maxPayloadBytes}`,
        );
      }
      return checkModification(context, beyondEnd, misaligned, NBD_ENOSPC, range);
    case NBD_CMD_WRITE_ZEROES:
      return checkModification(context, beyondEnd, misaligned, NBD_ENOSPC, range);
    case NBD_CMD_TRIM:
      return checkModification(context, beyondEnd, misaligned, NBD_EINVAL, range);
    case NBD_CMD_CACHE:
      if (beyondEnd)
        return fail(NBD_EINVAL, `${range} is beyond the end of the export (${context.size} bytes)`);
      return OK;
    case NBD_CMD_BLOCK_STATUS:
      // proto.md "Metadata querying": SHOULD reply EINVAL without a selected context.
      if (!context.metaContextSelected) return fail(NBD_EINVAL, "no metadata context was selected");
      if (length === 0) return fail(NBD_EINVAL, "block status of zero bytes");
      if (beyondEnd)
        return fail(NBD_EINVAL, `${range} is beyond the end of the export (${context.size} bytes)`);
      if (misaligned) return fail(NBD_EINVAL, `${range} is not aligned to ${context.minimumBlockSize} bytes`);
      return OK;
    default:
      return fail(NBD_EINVAL, `command ${type} is not valid here`);
  }
}

function checkModification(
  context: RequestContext,
  beyondEnd: boolean,
  misaligned: boolean,
  beyondEndErrno: number,
  range: string,
): RequestVerdict {
  if (context.readOnly) return fail(NBD_EPERM, "the export is read-only");
  if (beyondEnd)
    return fail(beyondEndErrno, `${range} is beyond the end of the export (${context.size} bytes)`);
  if (misaligned) return fail(NBD_EINVAL, `${range} is not aligned to ${context.minimumBlockSize} bytes`);
  return OK;
}

function isKnownCommand(type: number): boolean {
  return (
    type === NBD_CMD_READ ||
    type === NBD_CMD_WRITE ||
    type === NBD_CMD_DISC ||
    type === NBD_CMD_FLUSH ||
    type === NBD_CMD_TRIM ||
    type === NBD_CMD_CACHE ||
    type === NBD_CMD_WRITE_ZEROES ||
    type === NBD_CMD_BLOCK_STATUS
  );
}

function fail(errno: number, message: string): RequestVerdict {
  return { ok: false, errno, message };
}
