import path from "node:path";
import { invalidArgument } from "./request-errors.js";

/**
 * Paths given by the CO (staging_target_path, target_path, volume_path). CSI spec: they "MUST be
 * an absolute path in the root filesystem of the process serving this request", and the plugin
 * must accept at least 128 bytes. We also refuse anything that is not already in normal form
 * ("..", ".", "//", a trailing slash, NUL): such a path could escape the directory the CO meant,
 * and a normal-form path never needs them. When the node is configured with path roots (kubelet's
 * directory, say), the path must lie strictly inside one of them.
 */
const MAX_PATH_BYTES = 4096;

export function validateNodePath(p: string, field: string, roots: readonly string[] = []): string {
  if (p === "") throw invalidArgument(`${field} is required`);
  if (Buffer.byteLength(p) > MAX_PATH_BYTES)
    throw invalidArgument(`${field} is longer than ${MAX_PATH_BYTES} bytes`);
  if (p.includes("\0")) throw invalidArgument(`${field} contains a NUL character`);
  if (!path.posix.isAbsolute(p))
    throw invalidArgument(`${field} ${JSON.stringify(p)} must be an absolute path`);
  if (p === "/" || path.posix.normalize(p) !== p || p.endsWith("/")) {
    throw invalidArgument(
      `${field} ${JSON.stringify(p)} is not a normalized absolute path (no '..', '.', '//' or trailing '/', and not '/')`,
    );
  }
  if (roots.length > 0 && !roots.some((root) => p.startsWith(root.endsWith("/") ? root : `${root}/`))) {
    throw invalidArgument(
      `${field} ${JSON.stringify(p)} is outside the directories this node serves (${roots.join(", ")})`,
    );
  }
  return p;
}
