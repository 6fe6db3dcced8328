/**
 * Wire constants of the NBD protocol, named as in the protocol document (proto.md, "Values").
 * Every number the server puts on or reads from the wire is defined here and nowhere else.
 */

/** proto.md "Newstyle negotiation": 'NBDMAGIC', the first 8 bytes the server sends. */
export const NBD_INIT_MAGIC = 0x4e42444d41474943n;
/** proto.md "Newstyle negotiation": 'IHAVEOPT', sent by the server and before every client option. */
export const NBD_OPTS_MAGIC = 0x49484156454f5054n;
/** proto.md "Fixed newstyle negotiation": magic of every option reply. */
export const NBD_REP_MAGIC = 0x0003e889045565a9n;
/** proto.md "Request message". */
export const NBD_REQUEST_MAGIC = 0x25609513;
/** proto.md "Simple reply message". */
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
/** proto.md "Structured reply chunk message". */
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** proto.md "Handshake flags" (16 bits, server to client). */
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;

/** proto.md "Client flags" (32 bits, client to server). */
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

/** proto.md "Transmission flags" (16 bits). */
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

/** proto.md "Option types". */
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_PEEK_EXPORT = 4;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;

/** proto.md "Option reply types"; error replies have bit 31 set. */
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
const NBD_REP_FLAG_ERROR = 2 ** 31;
export const NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR + 1;
export const NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR + 2;
export const NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR + 3;
export const NBD_REP_ERR_PLATFORM = NBD_REP_FLAG_ERROR + 4;
export const NBD_REP_ERR_TLS_REQD = NBD_REP_FLAG_ERROR + 5;
export const NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR + 6;
export const NBD_REP_ERR_SHUTDOWN = NBD_REP_FLAG_ERROR + 7;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = NBD_REP_FLAG_ERROR + 8;
export const NBD_REP_ERR_TOO_BIG = NBD_REP_FLAG_ERROR + 9;

/** proto.md "NBD_REP_INFO" information types. */
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

/** proto.md "Request types". */
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

/** proto.md "Command flags". */
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

/** proto.md "Structured reply flags" and "Structured reply types". */
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = 2 ** 15 + 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = 2 ** 15 + 2;

/** proto.md "`base:allocation` metadata context" status flags. */
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;

/** proto.md "The `base:` metadata namespace". */
export const BASE_ALLOCATION_CONTEXT = "base:allocation";

/** proto.md "Error values": the only errno values allowed on the wire. */
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

/** Sizes of fixed-length frames. */
export const GREETING_LENGTH = 18; // NBDMAGIC + IHAVEOPT + 16-bit handshake flags
export const OPTION_HEADER_LENGTH = 16; // IHAVEOPT + option + length
export const OPTION_REPLY_HEADER_LENGTH = 20; // magic + option + reply type + length
export const REQUEST_HEADER_LENGTH = 28; // magic + flags + type + handle + offset + length
export const SIMPLE_REPLY_HEADER_LENGTH = 16; // magic + error + handle
export const STRUCTURED_REPLY_HEADER_LENGTH = 20; // magic + flags + type + handle + length
/** proto.md "NBD_OPT_EXPORT_NAME": reserved zeroes after size and flags unless NO_ZEROES. */
export const EXPORT_NAME_ZERO_PADDING = 124;

/** proto.md "Conventions": strings (export names, messages) MUST be no longer than 4096 bytes. */
export const MAX_STRING_BYTES = 4096;

/** proto.md "Block size constraints": the largest request length every client expects to work. */
export const NBD_MAX_PAYLOAD_DEFAULT = 32 * 1024 * 1024;

/** Names of commands, for logs, stats and observers. */
export type NbdCommandName =
  "read" | "write" | "disc" | "flush" | "trim" | "cache" | "write_zeroes" | "block_status" | "unknown";

export function commandName(type: number): NbdCommandName {
  switch (type) {
    case NBD_CMD_READ:
      return "read";
    case NBD_CMD_WRITE:
      return "write";
    case NBD_CMD_DISC:
      return "disc";
    case NBD_CMD_FLUSH:
      return "flush";
    case NBD_CMD_TRIM:
      return "trim";
    case NBD_CMD_CACHE:
      return "cache";
    case NBD_CMD_WRITE_ZEROES:
      return "write_zeroes";
    case NBD_CMD_BLOCK_STATUS:
      return "block_status";
    default:
      return "unknown";
  }
}

/** Names of the wire errno values, for logs, stats and observers. */
export type NbdErrnoName =
  "EPERM" | "EIO" | "ENOMEM" | "EINVAL" | "ENOSPC" | "EOVERFLOW" | "ENOTSUP" | "ESHUTDOWN";

export function errnoName(errno: number): NbdErrnoName {
  switch (errno) {
    case NBD_EPERM:
      return "EPERM";
    case NBD_ENOMEM:
      return "ENOMEM";
    case NBD_EINVAL:
      return "EINVAL";
    case NBD_ENOSPC:
      return "ENOSPC";
    case NBD_EOVERFLOW:
      return "EOVERFLOW";
    case NBD_ENOTSUP:
      return "ENOTSUP";
    case NBD_ESHUTDOWN:
      return "ESHUTDOWN";
    default:
      return "EIO";
  }
}
