import { promises as fs } from "node:fs";
import { SnapblockError, asSnapblockError } from "../errors/index.js";
import { removeAtomicWriteLeftovers, writeFileAtomically } from "../files/index.js";
import type { EngineDeviceKind, EngineMeta, EngineTombstone } from "./engine-api.js";

/** What the store keeps string maps for: volumes, snapshots and group snapshot records. */
export type MetaKind = EngineDeviceKind | "group";

/**
 * The small persistent side store of the CSI layer: per volume and snapshot, string metadata the
 * engine does not keep (the CSI name, fsType, the requested capabilities, the CSI source id).
 * One JSON file, rewritten atomically on every change (temporary file, fsync, rename, fsync of
 * the directory): after a crash it holds the old or the new content, whole.
 *
 * Writes are serialized; a failed write leaves the in-memory state as it was before the change,
 * so memory and file never disagree.
 */
const FORMAT_VERSION = 1;

interface FileShape {
  version: number;
  volumes: Record<string, Record<string, string>>;
  snapshots: Record<string, Record<string, string>>;
  /** Group snapshot records by engine name (the CSI layer's; absent in files written before them). */
  groups?: Record<string, Record<string, string>>;
  /**
   * Snapshots deleted in the cluster, for holders that were down: "<node>/<name>" -> JSON
   * {"id": engine id or 0, "at": ms of the delete}.
   */
  tombstones?: Record<string, string>;
}

export class MetadataStore {
  private state: FileShape = { version: FORMAT_VERSION, volumes: {}, snapshots: {} };
  private tail: Promise<void> = Promise.resolve();

  private constructor(private readonly file: string) {}

  static async open(file: string): Promise<MetadataStore> {
    const store = new MetadataStore(file);
    await removeAtomicWriteLeftovers(file);
    let text: string | undefined;
    try {
      text = await fs.readFile(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
        throw asSnapblockError(err, `reading CSI metadata ${file}`);
      }
    }
    if (text !== undefined) store.state = parse(text, file);
    return store;
  }

  get(kind: MetaKind, name: string): EngineMeta {
    return { ...(this.table(kind)[name] ?? {}) };
  }

  has(kind: MetaKind, name: string): boolean {
    return Object.hasOwn(this.table(kind), name);
  }

  names(kind: MetaKind): string[] {
    return Object.keys(this.table(kind));
  }

  set(kind: MetaKind, name: string, meta: EngineMeta): Promise<void> {
    return this.change((s) => {
      table(s, kind)[name] = { ...meta };
    });
  }

  /** Sets several entries in one write (the members of a group snapshot). */
  setAll(kind: MetaKind, entries: readonly (readonly [string, EngineMeta])[]): Promise<void> {
    return this.change((s) => {
      for (const [name, meta] of entries) table(s, kind)[name] = { ...meta };
    });
  }

  /** Deletes several entries in one write. */
  deleteAll(kind: MetaKind, names: readonly string[]): Promise<void> {
    const present = names.filter((n) => this.has(kind, n));
    if (present.length === 0) return this.tail;
    return this.change((s) => {
      for (const n of present) delete table(s, kind)[n];
    });
  }

  delete(kind: MetaKind, name: string): Promise<void> {
    if (!this.has(kind, name)) return this.tail;
    return this.change((s) => {
      delete table(s, kind)[name];
    });
  }

  /**
   * Records deleted snapshots, keeping per snapshot the latest incarnation deleted, and drops
   * tombstones older than `keepMs`.
   */
  addTombstones(tombstones: EngineTombstone[], now: Date, keepMs: number): Promise<void> {
    return this.change((s) => {
      const t = (s.tombstones ??= {});
      for (const n of tombstones) {
        const old = readTombstone(n.origin, t[n.origin]);
        if (old && old.id >= n.id && old.deletedAtMs >= n.deletedAtMs) continue;
        const id = Math.max(old?.id ?? 0, n.id);
        const at = Math.max(old?.deletedAtMs ?? 0, n.deletedAtMs);
        t[n.origin] = JSON.stringify({ id, at });
      }
      for (const [o, raw] of Object.entries(t)) {
        const stone = readTombstone(o, raw);
        if (!stone || now.getTime() - stone.deletedAtMs > keepMs) delete t[o];
      }
    });
  }

  tombstones(): EngineTombstone[] {
    return Object.entries(this.state.tombstones ?? {}).flatMap(([o, raw]) => {
      const stone = readTombstone(o, raw);
      return stone ? [stone] : [];
    });
  }

  /** Drops entries whose volume or snapshot no longer exists (a crash between the two writes). */
  prune(kind: MetaKind, keep: (name: string) => boolean): Promise<void> {
    const stale = this.names(kind).filter((n) => !keep(n));
    if (stale.length === 0) return this.tail;
    return this.change((s) => {
      for (const n of stale) delete table(s, kind)[n];
    });
  }

  private table(kind: MetaKind): Record<string, Record<string, string>> {
    return table(this.state, kind);
  }

  private change(mutate: (state: FileShape) => void): Promise<void> {
    const run = async (): Promise<void> => {
      const next = structuredClone(this.state);
      mutate(next);
      await writeFileAtomically(this.file, `${JSON.stringify(next, null, 2)}\n`, { what: "CSI metadata" });
      this.state = next;
    };
    const result = this.tail.then(run, run);
    // The queue continues after a failure; the failed caller gets the error.
    this.tail = result.catch(() => undefined);
    return result;
  }
}

function readTombstone(origin: string, raw: string | undefined): EngineTombstone | undefined {
  if (raw === undefined) return undefined;
  try {
    const v = JSON.parse(raw) as { id?: unknown; at?: unknown };
    if (typeof v.id === "number" && typeof v.at === "number") return { origin, id: v.id, deletedAtMs: v.at };
  } catch {
    // Not JSON: an unreadable entry buries nothing (it is dropped at the next change).
  }
  return undefined;
}

function table(state: FileShape, kind: MetaKind): Record<string, Record<string, string>> {
  if (kind === "group") return (state.groups ??= {});
  return kind === "volume" ? state.volumes : state.snapshots;
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
