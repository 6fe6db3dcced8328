/**
 * pkg/files: the two things every snapblock process does with local files safely: replace a
 * state file atomically and durably, and bind a unix socket that no other user can reach or
 * redirect. This is the module's only entry point.
 */
export {
  writeFileAtomically,
  syncDirectory,
  removeAtomicWriteLeftovers,
  type AtomicWriteOptions,
} from "./atomic-file.js";
export { MAX_UNIX_PATH_BYTES, prepareSocketPath, restrictSocket, removeOwnSocket } from "./unix-socket.js";
