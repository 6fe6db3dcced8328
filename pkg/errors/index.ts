/**
 * pkg/errors: the one typed error of snapblock (SnapblockError, with the engine's codes) and its
 * subclass for call outcomes that are not engine conditions (StatusError). This is the module's
 * only entry point.
 */
export {
  SnapblockError,
  ERROR_CODES,
  isSnapblockError,
  asSnapblockError,
  type ErrorCode,
} from "./snapblock-error.js";
export { StatusError, STATUS_ONLY, type StatusOnly } from "./status-error.js";
