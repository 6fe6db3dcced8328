import type { Pool } from "../engine/index.js";
import type { EngineDeviceKind, EngineMeta, EngineTombstone } from "./engine-api.js";

/** What the store keeps string maps for: volumes, snapshots and group snapshot records. */
export type MetaKind = EngineDeviceKind | "group";

/**
 * The pool's note tables this layer uses (docs/engine-format.md, NOTE records): the engine keeps
 * them without reading them.
 */
export const NOTE_TABLES = {
  /** Group snapshot records, by group name. */
  groups: 1,
  /** Snapshots deleted in the cluster, by origin "<node>/<name>": {"id", "at"} as decimal text. */
  tombstones: 2,
  /** Files of an older release imported into the pool (legacy-metadata-file.ts), by file name. */
  imports: 3,
} as const;

/**
 * The CSI layer's string metadata per volume and snapshot (the CSI name, fsType, the requested
 * capabilities, the CSI source id), per group snapshot, and its tombstones, kept in the pool's own
 * journal: a volume's or snapshot's metadata is its annotations (ANNOTATE records), made in the
 * same commit as the device itself when it is created and gone with it when it is deleted; groups
 * and tombstones are entries of note tables. Every change is one journal commit, whatever the
 * number of volumes; after a crash a device has the metadata it was made or last changed with.
 *
 * Devices get their first metadata where they are created (Pool options `annotations`); this
 * store reads it and changes it afterwards.
 */
export class MetadataStore {
  constructor(private readonly pool: Pool) {}

  get(kind: MetaKind, name: string): EngineMeta {
    if (kind === "group") return { ...this.pool.notes(NOTE_TABLES.groups).get(name) };
    return this.has(kind, name) ? this.pool.annotations(kind, name) : {};
  }

  has(kind: MetaKind, name: string): boolean {
    if (kind === "group") return this.pool.notes(NOTE_TABLES.groups).has(name);
    return this.pool.has(kind, name);
  }

  /**
   * Replaces the metadata of an existing volume or snapshot (NOT_FOUND when there is none), or
   * sets a group record; durable when it returns.
   */
  async set(kind: MetaKind, name: string, meta: EngineMeta): Promise<void> {
    if (kind === "group") {
      await this.pool.annotateAll({ notes: [{ table: NOTE_TABLES.groups, name, map: meta }] });
    } else await this.pool.annotate(kind, name, meta);
  }

  /** Replaces the metadata of several volumes and snapshots in one commit. */
  async setAll(
    entries: readonly { kind: EngineDeviceKind; name: string; meta: EngineMeta }[],
  ): Promise<void> {
    await this.pool.annotateAll({
      devices: entries.map((e) => ({ kind: e.kind, name: e.name, annotations: e.meta })),
    });
  }

  /** Removes a group record (a volume's or snapshot's metadata goes with the device). */
  async deleteGroup(name: string): Promise<void> {
    await this.pool.annotateAll({ notes: [{ table: NOTE_TABLES.groups, name, map: undefined }] });
  }

  /**
   * Records deleted snapshots, keeping per snapshot the latest incarnation deleted, and drops
   * tombstones older than `keepMs`; one commit.
   */
  async addTombstones(tombstones: EngineTombstone[], now: Date, keepMs: number): Promise<void> {
    const current = new Map(this.tombstones().map((t) => [t.origin, t]));
    const changed = new Map<string, EngineTombstone | undefined>();
    for (const n of tombstones) {
      const old = changed.get(n.origin) ?? current.get(n.origin);
      if (old && old.id >= n.id && old.deletedAtMs >= n.deletedAtMs) continue;
      const stone = {
        origin: n.origin,
        id: Math.max(old?.id ?? 0, n.id),
        deletedAtMs: Math.max(old?.deletedAtMs ?? 0, n.deletedAtMs),
      };
      changed.set(n.origin, stone);
      current.set(n.origin, stone);
    }
    for (const [origin, stone] of current) {
      if (now.getTime() - stone.deletedAtMs > keepMs) changed.set(origin, undefined);
    }
    // Unreadable entries bury nothing: they go too.
    for (const origin of this.pool.notes(NOTE_TABLES.tombstones).keys()) {
      if (!current.has(origin)) changed.set(origin, undefined);
    }
    await this.pool.annotateAll({
      notes: [...changed].map(([name, stone]) => ({
        table: NOTE_TABLES.tombstones,
        name,
        map: stone && tombstoneMap(stone),
      })),
    });
  }

  tombstones(): EngineTombstone[] {
    return [...this.pool.notes(NOTE_TABLES.tombstones)].flatMap(([origin, map]) => {
      const stone = readTombstone(origin, map);
      return stone ? [stone] : [];
    });
  }
}

export function tombstoneMap(t: EngineTombstone): Record<string, string> {
  return { id: String(t.id), at: String(t.deletedAtMs) };
}

function readTombstone(origin: string, map: Readonly<Record<string, string>>): EngineTombstone | undefined {
  const id = Number(map.id);
  const at = Number(map.at);
  if (map.id === undefined || map.at === undefined || !Number.isFinite(id) || !Number.isFinite(at)) {
    return undefined;
  }
  return { origin, id, deletedAtMs: at };
}
