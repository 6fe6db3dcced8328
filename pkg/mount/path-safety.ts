/**
 * Path checks for everything the node layer mounts onto or removes. Paths arrive from the CO
 * (CSI staging_target_path / target_path) and end up as arguments of mount(8) and umount(8) run
 * as root, so they are held to a strict shape instead of being "cleaned": a path that needs
 * cleaning is a path nobody should have sent.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { SnapblockError } from "../errors/index.js";

/** Linux PATH_MAX including the terminating NUL. */
const PATH_MAX = 4096;

/**
 * Returns `p` if it is absolute, already normalized (no `.`/`..` segments, no `//`, no trailing
 * slash) and free of control characters (NUL would truncate it; a newline would forge a line in
 * tools' output). Throws INVALID_ARGUMENT otherwise, naming `what` the path is for.
 */
export function assertSafeAbsolutePath(p: string, what: string): string {
  if (typeof p !== "string" || p === "") throw invalid(what, p, "is empty");
  if (p.length >= PATH_MAX) throw invalid(what, p, `is longer than ${PATH_MAX - 1} bytes`);
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is rejected here
  if (/[\u0000-\u001f\u007f]/.test(p)) throw invalid(what, p, "contains control characters");
  if (!path.posix.isAbsolute(p)) throw invalid(what, p, "is not an absolute path");
  if (p.split("/").some((segment) => segment === ".." || segment === "."))
    throw invalid(what, p, "contains '.' or '..' segments");
  if (path.posix.normalize(p) !== p || (p.length > 1 && p.endsWith("/")))
    throw invalid(what, p, `is not normalized (expected ${path.posix.normalize(p).replace(/(.)\/$/, "$1")})`);
  return p;
}

/** Lexical check: `p` is a safe absolute path equal to `root` or below it. */
export function assertPathWithinRoot(options: { root: string; path: string; what: string }): string {
  const root = assertSafeAbsolutePath(options.root, "allowed root");
  const p = assertSafeAbsolutePath(options.path, options.what);
  if (!isWithin(root, p)) throw invalid(options.what, p, `is outside the allowed root ${root}`);
  return p;
}

/**
 * Like assertPathWithinRoot, and also resolves symbolic links in the part of `path` that exists:
 * a pod that can write below the root must not be able to plant a symlink that sends a mount or
 * a removal elsewhere. (There is an unavoidable window between this check and the use of the
 * path; it is closed only by the CO owning the parent directories, as kubelet does.)
 */
export async function assertRealPathWithinRoot(options: {
  root: string;
  path: string;
  what: string;
}): Promise<string> {
  const p = assertPathWithinRoot(options);
  const realRoot = await realpathOf(options.root);
  let existing = p;
  const rest: string[] = [];
  for (;;) {
    try {
      const real = await fs.realpath(existing);
      const resolved = path.posix.join(real, ...rest);
      if (!isWithin(realRoot, resolved)) {
        throw invalid(options.what, p, `resolves to ${resolved}, outside the allowed root ${realRoot}`);
      }
      return p;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT" || existing === "/")
        throw asPathError(err, options.what, p);
      // This component does not exist yet (a target the CO will create): check its parent.
      rest.unshift(path.posix.basename(existing));
      existing = path.posix.dirname(existing);
    }
  }
}

function isWithin(root: string, p: string): boolean {
  return p === root || root === "/" || p.startsWith(`${root}/`);
}

async function realpathOf(root: string): Promise<string> {
  try {
    return await fs.realpath(root);
  } catch (err) {
    throw asPathError(err, "allowed root", root);
  }
}

function asPathError(err: unknown, what: string, p: string): SnapblockError {
  if (err instanceof SnapblockError) return err;
  return new SnapblockError(
    "IO",
    `${what} ${JSON.stringify(p)} could not be resolved: ${(err as Error).message}`,
    {
      cause: err,
    },
  );
}

function invalid(what: string, p: unknown, why: string): SnapblockError {
  return new SnapblockError("INVALID_ARGUMENT", `${what} ${JSON.stringify(p)} ${why}`);
}
