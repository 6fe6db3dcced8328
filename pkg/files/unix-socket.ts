import { promises as fs } from "node:fs";
import net from "node:net";
import path from "node:path";
import { SnapblockError, asSnapblockError } from "../errors/index.js";

/** Linux sun_path holds 108 bytes with the terminating NUL. */
export const MAX_UNIX_PATH_BYTES = 107;

/**
 * Makes a unix socket path ready to bind: the path fits sun_path; the directory exists (made 0700
 * when missing) and no other user can write to it; a stale socket left by a crashed process is
 * removed, while a live one (another server answers) or a non-socket file is an error: we never
 * delete someone else's file.
 *
 * Why the directory check: the server sets the socket's mode after bind with chmod, which follows
 * symlinks. In a directory others can write to, a racer could replace the fresh socket with a
 * link to any file between bind and chmod and have root change that file's mode. In a directory
 * only its owner (root) can write, nobody can.
 */
export async function prepareSocketPath(socketPath: string, what: string): Promise<void> {
  if (Buffer.byteLength(socketPath) > MAX_UNIX_PATH_BYTES) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `${what} socket path ${socketPath} is longer than ${MAX_UNIX_PATH_BYTES} bytes; use a shorter directory`,
    );
  }
  const dir = path.dirname(socketPath);
  try {
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw asSnapblockError(err, `creating the directory of ${what} socket ${socketPath}`);
  }
  const dirStat = await fs.stat(dir);
  if ((dirStat.mode & 0o022) !== 0 || (process.getuid && dirStat.uid !== process.getuid())) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `the directory ${dir} of ${what} socket ${socketPath} can be written by other users (mode ${(dirStat.mode & 0o777).toString(8)}, owner uid ${dirStat.uid}); put the socket in a directory only this user can write to`,
    );
  }
  let stat;
  try {
    stat = await fs.lstat(socketPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw asSnapblockError(err, `checking ${what} socket path ${socketPath}`);
  }
  if (!stat.isSocket()) {
    throw new SnapblockError(
      "ALREADY_EXISTS",
      `${socketPath} exists and is not a socket; remove it or choose another path for the ${what} socket`,
    );
  }
  if (await socketAnswers(socketPath)) {
    throw new SnapblockError(
      "BUSY",
      `another process serves ${socketPath}; stop it or choose another path for the ${what} socket`,
    );
  }
  await fs.unlink(socketPath);
}

/**
 * Sets a freshly bound socket's mode; checks first that the path is still the socket (not a
 * link), in a directory prepareSocketPath checked. Returns the socket's inode, so that shutdown
 * removes only this socket (removeOwnSocket).
 */
export async function restrictSocket(socketPath: string, mode: number): Promise<number> {
  const stat = await fs.lstat(socketPath);
  if (!stat.isSocket()) {
    throw new SnapblockError(
      "INTERNAL",
      `${socketPath} is no longer the socket just bound; refusing to chmod it`,
    );
  }
  await fs.chmod(socketPath, mode);
  return stat.ino;
}

/** Unlinks the socket only if it is still ours (another server may have replaced it). */
export async function removeOwnSocket(socketPath: string, inode: number | undefined): Promise<boolean> {
  try {
    const stat = await fs.lstat(socketPath);
    if (!stat.isSocket() || stat.ino !== inode) return false;
    await fs.unlink(socketPath);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

function socketAnswers(socketPath: string): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const probe = net.connect({ path: socketPath });
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
}
