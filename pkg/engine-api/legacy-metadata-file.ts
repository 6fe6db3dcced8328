import { promises as fs } from "node:fs";
import path from "node:path";
import type { AnnotationChanges, Pool } from "../engine/index.js";
import { SnapblockError, asSnapblockError } from "../errors/index.js";
import { removeAtomicWriteLeftovers, syncDirectory } from "../files/index.js";
import { NOTE_TABLES, tombstoneMap } from "./metadata-store.js";

/**
 * Earlier releases kept the CSI metadata in a JSON file beside the pool (`csi-metadata.json`,
 * rewritten whole, atomically, on every change). Opening such a pool imports the file into the
 * pool's journal once:
 *
 * 1. every entry whose volume or snapshot exists becomes that device's annotations (entries
 *    without a device were left by a crash between the file write and the device's creation:
 *    they were pruned at open before, and are dropped now), group records and tombstones become
 *    note entries, and a note in the `imports` table records that this file was imported: all in
 *    ONE commit;
 * 2. only then is the file renamed to `<file>.imported` (kept as a backup) and the directory
 *    synced.
 *
 * A crash before the commit leaves the file to be imported at the next open; a crash after it
 * leaves the note, so the file (back after a lost rename) is not imported over later changes but
 * only renamed away.
 */
const FORMAT_VERSION = 1;

interface FileShape {
  version: number;
  volumes: Record<string, Record<string, string>>;
  snapshots: Record<string, Record<string, string>>;
  groups?: Record<string, Record<string, string>>;
  /** "<node>/<name>" -> JSON {"id": engine id or 0, "at": ms of the delete}. */
  tombstones?: Record<string, string>;
}

export interface LegacyImport {
  /** Whether a file was found; false: nothing to do. */
  found: boolean;
  /** Entries imported now (0 when the file had been imported before a crash). */
  volumes: number;
  snapshots: number;
  groups: number;
  tombstones: number;
  /** Entries without a volume or snapshot, dropped. */
  dropped: number;
  /** Where the file was moved. */
  backup?: string;
}

export async function importLegacyMetadata(pool: Pool, file: string): Promise<LegacyImport> {
  const none: LegacyImport = { found: false, volumes: 0, snapshots: 0, groups: 0, tombstones: 0, dropped: 0 };
  await removeAtomicWriteLeftovers(file);
  let text: string;
  try {
    text = await fs.readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return none;
    throw asSnapblockError(err, `reading CSI metadata ${file}`);
  }
  const key = path.basename(file);
  const result: LegacyImport = { ...none, found: true };
  if (!pool.notes(NOTE_TABLES.imports).has(key)) {
    const shape = parse(text, file);
    const changes: Required<AnnotationChanges> = { devices: [], notes: [] };
    for (const kind of ["volume", "snapshot"] as const) {
      for (const [name, annotations] of Object.entries(kind === "volume" ? shape.volumes : shape.snapshots)) {
        if (!pool.has(kind, name)) {
          result.dropped++;
          continue;
        }
        changes.devices.push({ kind, name, annotations });
        if (kind === "volume") result.volumes++;
        else result.snapshots++;
      }
    }
    for (const [name, map] of Object.entries(shape.groups ?? {})) {
      changes.notes.push({ table: NOTE_TABLES.groups, name, map });
      result.groups++;
    }
    for (const [origin, raw] of Object.entries(shape.tombstones ?? {})) {
      const stone = readTombstone(origin, raw);
      if (!stone) continue; // unreadable: it buried nothing before either
      changes.notes.push({ table: NOTE_TABLES.tombstones, name: origin, map: tombstoneMap(stone) });
      result.tombstones++;
    }
    changes.notes.push({
      table: NOTE_TABLES.imports,
      name: key,
      map: { importedAt: new Date().toISOString(), bytes: String(Buffer.byteLength(text)) },
    });
    await pool.annotateAll(changes);
  }
  const backup = `${file}.imported`;
  try {
    await fs.rename(file, backup);
    await syncDirectory(path.dirname(file));
  } catch (err) {
    throw asSnapblockError(err, `moving the imported CSI metadata ${file} to ${backup}`);
  }
  result.backup = backup;
  return result;
}

function readTombstone(
  origin: string,
  raw: string,
): { origin: string; id: number; deletedAtMs: number } | undefined {
  try {
    const v = JSON.parse(raw) as { id?: unknown; at?: unknown };
    if (typeof v.id === "number" && typeof v.at === "number") return { origin, id: v.id, deletedAtMs: v.at };
  } catch (err) {
    // Not JSON: an unreadable entry buries nothing (the old store dropped it at its next change).
    if (!(err instanceof SyntaxError)) throw err;
  }
  return undefined;
}

function parse(text: string, file: string): FileShape {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new SnapblockError("CORRUPT", `CSI metadata ${file} is not valid JSON`, { cause: err });
  }
  const shape = raw as Partial<FileShape> | null;
  if (
    shape === null ||
    typeof shape !== "object" ||
    shape.version !== FORMAT_VERSION ||
    !isTable(shape.volumes) ||
    !isTable(shape.snapshots)
  ) {
    throw new SnapblockError(
      "CORRUPT",
      `CSI metadata ${file} has an unknown layout (expected version ${FORMAT_VERSION})`,
    );
  }
  const tombstones =
    shape.tombstones &&
    typeof shape.tombstones === "object" &&
    Object.values(shape.tombstones).every((v) => typeof v === "string")
      ? { tombstones: { ...shape.tombstones } }
      : {};
  const groups = isTable(shape.groups) ? { groups: shape.groups } : {};
  return {
    version: FORMAT_VERSION,
    volumes: shape.volumes,
    snapshots: shape.snapshots,
    ...groups,
    ...tombstones,
  };
}

function isTable(value: unknown): value is Record<string, Record<string, string>> {
  if (value === null || typeof value !== "object") return false;
  return Object.values(value).every(
    (entry) =>
      entry !== null &&
      typeof entry === "object" &&
      Object.values(entry as object).every((v) => typeof v === "string"),
  );
}
