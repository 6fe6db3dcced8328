import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import path from "node:path";
import { asSnapblockError } from "../errors/index.js";

export interface AtomicWriteOptions {
  /** Mode of a newly made file (default 0600: snapblock's state files are root's alone). */
  mode?: number;
  /** Says what the file is, for error messages ("CSI metadata", "attachment state"). */
  what: string;
}

/**
 * Replaces a file so that after a crash it holds the old or the new content, whole: a temporary
 * file beside it (unique name, created exclusively), write, fsync, rename over the target, fsync
 * of the directory (which makes the rename durable). A failed write removes the temporary file
 * and leaves the target as it was.
 */
export async function writeFileAtomically(
  file: string,
  contents: string | Buffer,
  options: AtomicWriteOptions,
): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    const handle = await fs.open(tmp, "wx", options.mode ?? 0o600);
    try {
      await handle.writeFile(contents);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(tmp, file);
    await syncDirectory(path.dirname(file));
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw asSnapblockError(err, `writing ${options.what} ${file}`);
  }
}

/** fsync of a directory: makes a rename, create or unlink in it durable. */
export async function syncDirectory(dir: string): Promise<void> {
  const handle = await fs.open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Removes the temporary files a crash in the middle of writeFileAtomically left beside `file`
 * (called when the file's owner opens it, so leftovers do not pile up across crashes).
 */
export async function removeAtomicWriteLeftovers(file: string): Promise<void> {
  const dir = path.dirname(file);
  const prefix = `${path.basename(file)}.tmp-`;
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw asSnapblockError(err, `listing ${dir}`);
  }
  for (const name of names) {
    if (name.startsWith(prefix) && LEFTOVER.test(name.slice(prefix.length - 5))) {
      await fs.rm(path.join(dir, name), { force: true });
    }
  }
}

const LEFTOVER = /^\.tmp-\d+-[0-9a-f]{8}$/;
