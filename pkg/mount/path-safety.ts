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
/** Linux NAME_MAX: the longest single path component (bytes); longer ones fail with ENAMETOOLONG. */
export const NAME_MAX = 255;

/**
 * Returns `p` if it is absolute, already normalized (no `.`/`..` segments, no `//`, no trailing
 * slash) and free of control characters (NUL would truncate it; a newline would forge a line in
 * tools' output). Throws INVALID_ARGUMENT otherwise, naming `what` the path is for.
 */
export function assertSafeAbsolutePath(p: string, what: string): string {
  if (typeof p !== "string" || p === "") throw invalid(what, p, "is empty");
  if (Buffer.byteLength(p) >= PATH_MAX) throw invalid(what, p, `is longer than ${PATH_MAX - 1} bytes`);
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is rejected here
  if (/[\u0000-\u001f\u007f]/.test(p)) throw invalid(what, p, "contains control characters");
  if (!path.posix.isAbsolute(p)) throw invalid(what, p, "is not an absolute path");
  if (p.split("/").some((segment) => segment === ".." || segment === "."))
    throw invalid(what, p, "contains '.' or '..' segments");
  if (path.posix.normalize(p) !== p || (p.length > 1 && p.endsWith("/")))
    throw invalid(what, p, `is not normalized (expected ${path.posix.normalize(p).replace(/(.)\/$/, "$1")})`);
  if (p.split("/").some((segment) => Buffer.byteLength(segment) > NAME_MAX))
    throw invalid(what, p, `has a component longer than ${NAME_MAX} bytes`);
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
  if (realRoot === undefined)
    throw invalid(options.what, p, `is under ${options.root}, which does not exist`);
  const resolved = await resolveExisting(p, options.what);
  if (!isWithin(realRoot, resolved)) {
    throw invalid(options.what, p, `resolves to ${resolved}, outside the allowed root ${realRoot}`);
  }
  return p;
}

export interface NodePathCheck {
  path: string;
  /** The directories the path must lie strictly inside (--path-root); [] for anywhere. */
  roots: readonly string[];
  /** What the path is, for messages ("target_path"). */
  what: string;
  /** What an existing path must be: a directory (a filesystem's mount point) or not (a raw device's). */
  kind?: "directory" | "file";
}

/**
 * Everything checked about a path the CO gave, before anything is attached, formatted, created,
 * mounted, unmounted or removed for it, so that a refusal leaves nothing behind:
 * - its shape (assertSafeAbsolutePath: absolute, normalized, no component over NAME_MAX);
 * - with roots: the path, and where it leads once the symbolic links in the part that exists are
 *   resolved, lie strictly inside one of them (a pod that can write below the root must not send
 *   a mount, an unmount or a removal elsewhere through a symlink);
 * - its last component, when it exists, is not a symbolic link: mount(8) and umount(8) would
 *   follow it, and nothing this plugin stages or publishes at is ever a link;
 * - an existing path is of the kind asked for (ALREADY_EXISTS otherwise, as prepareMountTarget).
 * Answers whether the path exists now. The window between this check and the use of the path is
 * closed only by the CO owning the parent directories, as kubelet does.
 */
export async function assertNodePath(options: NodePathCheck): Promise<{ exists: boolean }> {
  const { what, roots } = options;
  const p = assertSafeAbsolutePath(options.path, what);
  if (roots.length > 0 && !roots.some((root) => isStrictlyWithin(root, p)))
    throw invalid(what, p, `is outside the allowed roots (${roots.join(", ")})`);
  let stat;
  try {
    stat = await fs.lstat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw asPathError(err, what, p);
  }
  if (stat?.isSymbolicLink())
    throw invalid(what, p, "is a symbolic link; give the path itself (links are never followed here)");
  if (roots.length > 0) {
    const resolved = await resolveExisting(p, what);
    // A root that does not exist (yet) holds nothing: no path can resolve inside it.
    const realRoots = (await Promise.all(roots.map((root) => realpathOf(root)))).filter(
      (root): root is string => root !== undefined,
    );
    if (!realRoots.some((root) => isStrictlyWithin(root, resolved)))
      throw invalid(what, p, `resolves to ${resolved}, outside the allowed roots (${realRoots.join(", ")})`);
  }
  if (
    stat !== undefined &&
    options.kind !== undefined &&
    stat.isDirectory() !== (options.kind === "directory")
  ) {
    throw new SnapblockError(
      "ALREADY_EXISTS",
      `${what} ${p} exists and is ${stat.isDirectory() ? "a directory" : "not a directory"}; a ${options.kind} is needed here`,
    );
  }
  return { exists: stat !== undefined };
}

/** `p` with the symbolic links of its existing part resolved; the missing rest appended as it is. */
async function resolveExisting(p: string, what: string): Promise<string> {
  let existing = p;
  const rest: string[] = [];
  for (;;) {
    try {
      return path.posix.join(await fs.realpath(existing), ...rest);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT" || existing === "/")
        throw asPathError(err, what, p);
      // This component does not exist yet (a target the CO will create): resolve its parent.
      rest.unshift(path.posix.basename(existing));
      existing = path.posix.dirname(existing);
    }
  }
}

function isStrictlyWithin(root: string, p: string): boolean {
  return p !== root && isWithin(root, p);
}

function isWithin(root: string, p: string): boolean {
  return p === root || root === "/" || p.startsWith(`${root}/`);
}

async function realpathOf(root: string): Promise<string | undefined> {
  try {
    return await fs.realpath(root);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw asPathError(err, "allowed root", root);
  }
}

/** Paths the kernel cannot use as given are the caller's error; anything else is the node's. */
const UNUSABLE_PATH: Record<string, string> = {
  ENAMETOOLONG: "is too long for the kernel (ENAMETOOLONG)",
  ELOOP: "has too many levels of symbolic links (ELOOP)",
  ENOTDIR: "goes through something that is not a directory (ENOTDIR)",
};

function asPathError(err: unknown, what: string, p: string): SnapblockError {
  if (err instanceof SnapblockError) return err;
  const unusable = UNUSABLE_PATH[(err as NodeJS.ErrnoException).code ?? ""];
  if (unusable !== undefined) return invalid(what, p, unusable);
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
