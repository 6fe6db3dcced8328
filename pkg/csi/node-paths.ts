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
/** Linux NAME_MAX: a longer component fails in the kernel (ENAMETOOLONG), so it is refused first. */
const MAX_NAME_BYTES = 255;

/**
 * What is wrong with a node path: "missing" (empty), "malformed" (too long, NUL: no path at all),
 * or "elsewhere" (a path, but not one this plugin stages or publishes at: relative, not
 * normalized, outside the roots). undefined when the path is acceptable.
 */
export interface NodePathProblem {
  kind: "missing" | "malformed" | "elsewhere";
  message: string;
}

export function nodePathProblem(
  p: string,
  field: string,
  roots: readonly string[] = [],
): NodePathProblem | undefined {
  if (p === "") return { kind: "missing", message: `${field} is required` };
  if (Buffer.byteLength(p) > MAX_PATH_BYTES)
    return { kind: "malformed", message: `${field} is longer than ${MAX_PATH_BYTES} bytes` };
  if (p.includes("\0")) return { kind: "malformed", message: `${field} contains a NUL character` };
  if (p.split("/").some((name) => Buffer.byteLength(name) > MAX_NAME_BYTES))
    return { kind: "malformed", message: `${field} has a component longer than ${MAX_NAME_BYTES} bytes` };
  if (!path.posix.isAbsolute(p))
    return { kind: "elsewhere", message: `${field} ${JSON.stringify(p)} must be an absolute path` };
  if (p === "/" || path.posix.normalize(p) !== p || p.endsWith("/")) {
    return {
      kind: "elsewhere",
      message: `${field} ${JSON.stringify(p)} is not a normalized absolute path (no '..', '.', '//' or trailing '/', and not '/')`,
    };
  }
  if (roots.length > 0 && !roots.some((root) => p.startsWith(root.endsWith("/") ? root : `${root}/`))) {
    return {
      kind: "elsewhere",
      message: `${field} ${JSON.stringify(p)} is outside the directories this node serves (${roots.join(", ")})`,
    };
  }
  return undefined;
}

/** A path the plugin will create or mount at: every problem is the CO's error (INVALID_ARGUMENT). */
export function validateNodePath(p: string, field: string, roots: readonly string[] = []): string {
  const problem = nodePathProblem(p, field, roots);
  if (problem) throw invalidArgument(problem.message);
  return p;
}
