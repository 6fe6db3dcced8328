/**
 * One small JSON file per attachment in the attacher's state directory, so that a restarted node
 * plugin knows which devices, FUSE mounts and processes are its own. Written as tmp file + fsync
 * + rename + fsync of the directory: after a crash a record is either the old one or the new one,
 * never half of each.
 *
 * A record is written before anything is created ("attaching") and updated as each piece comes
 * up, so that a crash at any step leaves enough to find and remove what was made.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { SnapblockError } from "../errors/index.js";
import { syncDirectory, writeFileAtomically } from "../files/index.js";
import { assertAttachmentKey, type AttacherKind } from "./attachment.js";

export interface AttachmentRecord {
  version: 1;
  key: string;
  kind: AttacherKind;
  socketPath: string;
  exportName: string;
  readOnly: boolean;
  expectedSizeBytes: number;
  /** "attaching" until the device is up: a record left in this phase marks an interrupted attach. */
  phase: "attaching" | "attached";
  devicePath?: string;
  createdAt: string;
  nbdfuse?: { mountDir: string; file: string; logPath: string; pid?: number };
  nbd?: NbdRecord;
}

/** A kernel nbd attachment: the device, and how it was connected (what a reconnect needs). */
export interface NbdRecord {
  index: number;
  kernelPid?: number;
  /**
   * "netlink": through snapblock-nbd-netlink with a dead-connection timeout, so the data plane
   * can reconnect the device after a restart. Absent: nbd-client, which cannot.
   */
  via?: "netlink";
  /** Connections handed to the kernel (a reconnect replaces each). Absent: 1. */
  connections?: number;
  /** The dead-connection timeout given at connect, in seconds. */
  deadConnTimeoutSeconds?: number;
}

const SUFFIX = ".json";

export class AttachmentStateStore {
  readonly stateDir: string;

  constructor(stateDir: string) {
    if (!path.isAbsolute(stateDir)) {
      throw new SnapblockError(
        "INVALID_ARGUMENT",
        `state directory ${JSON.stringify(stateDir)} must be absolute`,
      );
    }
    this.stateDir = path.normalize(stateDir);
  }

  recordPath(key: string): string {
    return path.join(this.stateDir, `${assertAttachmentKey(key)}${SUFFIX}`);
  }

  /** Creates the directory (owner-only: it also holds the FUSE mounts that expose volume data). */
  async ensureDir(): Promise<void> {
    try {
      await fs.mkdir(this.stateDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new SnapblockError(
        "IO",
        `could not create state directory ${this.stateDir}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }

  async read(key: string): Promise<AttachmentRecord | undefined> {
    const file = this.recordPath(key);
    let text: string;
    try {
      text = await fs.readFile(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw new SnapblockError("IO", `could not read attachment state ${file}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    return parseRecord(text, file, key);
  }

  async write(record: AttachmentRecord): Promise<void> {
    await this.ensureDir();
    await writeFileAtomically(this.recordPath(record.key), `${JSON.stringify(record, null, 2)}\n`, {
      what: "attachment state",
    });
  }

  async remove(key: string): Promise<void> {
    const file = this.recordPath(key);
    try {
      await fs.unlink(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return; // already gone: nothing to make durable
      throw new SnapblockError("IO", `could not remove attachment state ${file}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    await syncDirectory(this.stateDir);
  }

  /** Every record in the directory (temporary files of interrupted writes are ignored). */
  async list(): Promise<AttachmentRecord[]> {
    let names: string[];
    try {
      names = await fs.readdir(this.stateDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw new SnapblockError("IO", `could not list ${this.stateDir}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const records: AttachmentRecord[] = [];
    for (const name of names.sort()) {
      if (!name.endsWith(SUFFIX)) continue;
      const record = await this.read(name.slice(0, -SUFFIX.length));
      if (record !== undefined) records.push(record);
    }
    return records;
  }
}

/** Checks every field: a record drives what gets unmounted and killed, so a bad one must not be guessed at. */
export function parseRecord(text: string, file: string, key: string): AttachmentRecord {
  const corrupt = (why: string) =>
    new SnapblockError(
      "CORRUPT",
      `attachment state ${file} is not valid (${why}); inspect and remove it by hand`,
    );
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new SnapblockError("CORRUPT", `attachment state ${file} is not JSON: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (typeof value !== "object" || value === null) throw corrupt("not an object");
  const r = value as Record<string, unknown>;
  if (r.version !== 1) throw corrupt(`unknown version ${JSON.stringify(r.version)}`);
  if (r.key !== key) throw corrupt(`key ${JSON.stringify(r.key)} does not match the file name`);
  if (r.kind !== "nbd-client" && r.kind !== "nbdfuse-loop") throw corrupt("bad kind");
  for (const field of ["socketPath", "exportName", "createdAt"] as const) {
    if (typeof r[field] !== "string") throw corrupt(`${field} missing`);
  }
  if (typeof r.readOnly !== "boolean") throw corrupt("readOnly missing");
  if (!Number.isSafeInteger(r.expectedSizeBytes)) throw corrupt("expectedSizeBytes missing");
  if (r.phase !== "attaching" && r.phase !== "attached") throw corrupt("bad phase");
  if (r.devicePath !== undefined && typeof r.devicePath !== "string") throw corrupt("bad devicePath");
  if (r.kind === "nbdfuse-loop") {
    const f = r.nbdfuse as Record<string, unknown> | undefined;
    if (typeof f !== "object" || f === null) throw corrupt("nbdfuse section missing");
    for (const field of ["mountDir", "file", "logPath"] as const) {
      if (typeof f[field] !== "string") throw corrupt(`nbdfuse.${field} missing`);
    }
    if (f.pid !== undefined && !Number.isSafeInteger(f.pid)) throw corrupt("bad nbdfuse.pid");
  } else {
    const n = r.nbd as Record<string, unknown> | undefined;
    if (typeof n !== "object" || n === null || !Number.isSafeInteger(n.index))
      throw corrupt("nbd section missing");
    if (n.kernelPid !== undefined && !Number.isSafeInteger(n.kernelPid)) throw corrupt("bad nbd.kernelPid");
    if (n.via !== undefined && n.via !== "netlink") throw corrupt("bad nbd.via");
    for (const field of ["connections", "deadConnTimeoutSeconds"] as const) {
      const value = n[field];
      if (value !== undefined && (!Number.isSafeInteger(value) || (value as number) < 0))
        throw corrupt(`bad nbd.${field}`);
    }
  }
  return value as AttachmentRecord;
}
