/**
 * Steps both attachers take the same way: checking the socket before starting a client that would
 * only time out on it, deciding whether a record already serves a request, turning a record into
 * the Attachment callers see, and undoing a failed attach without losing the original error.
 */
import { promises as fs } from "node:fs";
import { SnapblockError, asSnapblockError } from "../errors/index.js";
import type { AttachOptions, Attachment } from "./attachment.js";
import type { AttachmentRecord } from "./state-store.js";

export async function assertSocket(socketPath: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = (await fs.stat(socketPath)).isSocket();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code === "ENOENT" ? "NOT_FOUND" : "IO";
    throw new SnapblockError(code, `NBD socket ${socketPath} is not there: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (!isSocket) throw new SnapblockError("INVALID_ARGUMENT", `${socketPath} is not a unix socket`);
}

/** Same export, same socket, same read-only-ness: a repeated attach is then a no-op. */
export function recordMatches(record: AttachmentRecord, request: AttachOptions): boolean {
  return (
    record.socketPath === request.socketPath &&
    record.exportName === request.exportName &&
    record.readOnly === request.readOnly
  );
}

export function toAttachment(
  record: AttachmentRecord,
  found: { devicePath: string | undefined; sizeBytes: number; problems: string[]; pid: number | undefined },
): Attachment {
  return {
    key: record.key,
    kind: record.kind,
    ...(found.devicePath === undefined ? {} : { devicePath: found.devicePath }),
    socketPath: record.socketPath,
    exportName: record.exportName,
    readOnly: record.readOnly,
    sizeBytes: found.sizeBytes,
    health: found.problems.length === 0 && found.devicePath !== undefined ? "ok" : "broken",
    problems: found.problems,
    attachedAt: record.createdAt,
    ...(found.pid === undefined ? {} : { pid: found.pid }),
  };
}

/**
 * Runs `teardown` after a failed attach and returns the error to throw: the original one, or, if
 * the cleanup failed too, one that says both (what is left behind needs a person).
 */
export async function cleanupFailedAttach(
  err: unknown,
  teardown: () => Promise<void>,
): Promise<SnapblockError> {
  const original = asSnapblockError(err, "attach failed");
  try {
    await teardown();
    return original;
  } catch (cleanupErr) {
    return new SnapblockError(
      original.code,
      `${original.message}; cleaning up after it also failed, leftovers may remain: ${(cleanupErr as Error).message}`,
      { cause: original },
    );
  }
}
