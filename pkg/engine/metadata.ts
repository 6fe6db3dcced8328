import { SnapblockError } from "../errors/index.js";
import type { ChunkSpace } from "./chunk-space.js";
import { type ChunkTables, type Table } from "./chunk-tree.js";
import { PendingChunks } from "./pending-chunks.js";
import { RecordType, type MetaRecord } from "./records.js";
import type { StringMap } from "./string-maps.js";
import type { DeviceKind } from "./types.js";

/** One volume or snapshot as the metadata knows it. */
export interface Device {
  id: number;
  kind: DeviceKind;
  name: string;
  sizeBytes: number;
  createdAtMs: number;
  table: Table;
  /** Device this one was created from (0: none). */
  sourceId: number;
  sourceKind: DeviceKind | undefined;
  sourceName: string | undefined;
  /** Id of the volume at the root of this device's family: diffs need a common lineage. */
  lineage: number;
  /** A full background copy is unfinished (resumed when the pool opens). */
  copying: boolean;
  /** Chunks whose content is still to arrive from elsewhere (pending-chunks.ts). */
  pending?: PendingChunks;
  /** A volume's protection policy (canonical text, protection-policy.ts); unset: off. */
  protection?: string;
  /** The layer above's string map for this device (ANNOTATE records); unset: none. */
  annotations?: StringMap;
  /** A recovery point pinned by an export (PIN records): thinning and the space rule leave it. */
  pinned?: boolean;
}

/**
 * The metadata state machine: devices, their tables and the chunk accounting, changed only by
 * applying records. The same `apply` runs live and during journal replay, which is what makes
 * replay rebuild exactly the committed state.
 */
export class Metadata {
  readonly devices = new Map<number, Device>();
  readonly volumes = new Map<string, Device>();
  readonly snapshots = new Map<string, Device>();
  nextId = 1;
  /** Sequence number of the last record applied. */
  seq = 0;
  /** Devices with pending chunks, by source: whom a fill of that source completes. */
  readonly pendingBySource = new Map<string, Set<Device>>();
  /**
   * Devices whose last pending chunk settled, by device id: at which record, from which source,
   * out of how many chunks. Until that record is committed a crash would bring the chunks back, so
   * the pull is not reported complete before then (the pool drops entries once committed).
   */
  readonly settledAt = new Map<number, { seq: number; source: string; total: number }>();
  /** Note tables (NOTE records): table number -> entry name -> string map. */
  readonly notes = new Map<number, Map<string, StringMap>>();

  constructor(
    readonly space: ChunkSpace,
    readonly tables: ChunkTables,
    readonly chunkSize: number,
  ) {}

  chunksFor(sizeBytes: number): number {
    return Math.ceil(sizeBytes / this.chunkSize);
  }

  device(id: number): Device {
    const d = this.devices.get(id);
    if (!d) throw new SnapblockError("CORRUPT", `metadata record names device ${id}, which does not exist`);
    return d;
  }

  byName(kind: DeviceKind): Map<string, Device> {
    return kind === "volume" ? this.volumes : this.snapshots;
  }

  addDevice(d: Device): void {
    this.devices.set(d.id, d);
    this.byName(d.kind).set(d.name, d);
    if (d.id >= this.nextId) this.nextId = d.id + 1;
    if (d.pending) this.trackPending(d);
  }

  /** Gives a device pending chunks (or more of them), indexed by source. */
  setPending(d: Device, pending: PendingChunks): void {
    d.pending = pending;
    this.trackPending(d);
  }

  private trackPending(d: Device): void {
    if (!d.pending) return;
    let set = this.pendingBySource.get(d.pending.source);
    if (!set) {
      set = new Set();
      this.pendingBySource.set(d.pending.source, set);
    }
    set.add(d);
  }

  private untrackPending(d: Device): void {
    if (!d.pending) return;
    const set = this.pendingBySource.get(d.pending.source);
    set?.delete(d);
    if (set?.size === 0) this.pendingBySource.delete(d.pending.source);
  }

  /** A chunk of `d` got content of its own (written, trimmed, filled): it is no longer pending. */
  private settle(d: Device, first: number, count = 1): void {
    if (!d.pending) return;
    if (count === 1) d.pending.clear(first);
    else d.pending.clearRange(first, count);
    if (d.pending.count === 0) {
      this.settledAt.set(d.id, { seq: this.seq, source: d.pending.source, total: d.pending.total });
      this.untrackPending(d);
      d.pending = undefined;
    }
  }

  /** Sets (a map) or removes (undefined) one entry of note table `table`. */
  setNote(table: number, name: string, map: StringMap | undefined): void {
    if (!Number.isInteger(table) || table < 1) throw new SnapblockError("CORRUPT", `note table ${table}`);
    let entries = this.notes.get(table);
    if (map) {
      if (!entries) this.notes.set(table, (entries = new Map<string, StringMap>()));
      entries.set(name, { ...map });
    } else if (entries) {
      entries.delete(name);
      if (entries.size === 0) this.notes.delete(table);
    }
  }

  /** Devices of `source` for which logical `chunk` is still pending. */
  pendingAt(source: string, chunk: number): Device[] {
    const out: Device[] = [];
    for (const d of this.pendingBySource.get(source) ?? []) if (d.pending?.has(chunk)) out.push(d);
    return out;
  }

  /** For MAP and MAP_PARTIAL: checks the logical chunk and takes the new physical chunk. */
  private claimMapped(r: { id: number; chunk: number; phys: number }, replay: boolean): Device {
    const d = this.device(r.id);
    if (r.chunk >= this.chunksFor(d.sizeBytes)) {
      throw new SnapblockError("CORRUPT", `record maps chunk ${r.chunk} beyond the end of device ${d.id}`);
    }
    // Replay names the chunk directly; live, the writer reserved it before writing the data.
    if (replay) this.space.claimForReplay(r.phys);
    else this.space.commitReserved(r.phys);
    return d;
  }

  /**
   * Applies one record. `replay` is true while rebuilding from the journal: a MAP then claims
   * its chunk directly instead of consuming a reservation.
   */
  apply(r: MetaRecord, seq: number, replay: boolean): void {
    if (seq !== this.seq + 1) {
      throw new SnapblockError("CORRUPT", `metadata record ${seq} applied after ${this.seq}: sequence gap`);
    }
    this.seq = seq;
    switch (r.type) {
      case RecordType.Create: {
        const kind: DeviceKind = r.kind === 1 ? "volume" : "snapshot";
        if (this.devices.has(r.id)) throw new SnapblockError("CORRUPT", `device ${r.id} created twice`);
        const source = r.sourceId ? this.device(r.sourceId) : undefined;
        const table = source
          ? this.tables.share(source.table)
          : this.tables.newTable(this.chunksFor(r.sizeBytes));
        this.tables.grow(table, this.chunksFor(r.sizeBytes));
        this.addDevice({
          id: r.id,
          kind,
          name: r.name,
          sizeBytes: r.sizeBytes,
          createdAtMs: r.createdAtMs,
          table,
          sourceId: r.sourceId,
          sourceKind: source?.kind,
          sourceName: source?.name,
          lineage: source ? source.lineage : r.id,
          copying: false,
          // A snapshot or clone of a device still filling waits for the same chunks.
          ...(source?.pending ? { pending: source.pending.clone() } : {}),
        });
        return;
      }
      case RecordType.Delete: {
        const d = this.device(r.id);
        this.untrackPending(d);
        this.tables.drop(d.table, seq);
        this.devices.delete(d.id);
        this.byName(d.kind).delete(d.name);
        return;
      }
      case RecordType.Map: {
        const d = this.claimMapped(r, replay);
        this.tables.set(d.table, r.chunk, r.phys, seq);
        this.settle(d, r.chunk);
        return;
      }
      case RecordType.Unmap: {
        const d = this.device(r.id);
        this.tables.unmapRange(d.table, r.first, r.count, seq);
        this.settle(d, r.first, r.count);
        return;
      }
      case RecordType.Resize: {
        const d = this.device(r.id);
        d.sizeBytes = r.sizeBytes;
        this.tables.grow(d.table, this.chunksFor(r.sizeBytes));
        d.pending?.grow(this.chunksFor(r.sizeBytes));
        return;
      }
      case RecordType.Pending: {
        const d = this.device(r.id);
        const chunks = this.chunksFor(d.sizeBytes);
        if (d.pending && d.pending.source !== r.source) {
          throw new SnapblockError("CORRUPT", `device ${d.id} has chunks pending from two sources`);
        }
        const pending = d.pending ?? PendingChunks.empty(r.source, chunks);
        for (const [first, count] of r.ranges) {
          if (first + count > chunks) {
            throw new SnapblockError(
              "CORRUPT",
              `record marks chunk ${first + count - 1} pending past the end of device ${d.id}`,
            );
          }
          pending.add(first, count);
        }
        pending.total = Math.max(pending.total, r.total);
        if (!d.pending && pending.count > 0) this.setPending(d, pending);
        return;
      }
      case RecordType.Fill: {
        const targets = r.ids.map((id) => this.device(id));
        if (targets.length === 0) throw new SnapblockError("CORRUPT", `fill of chunk ${r.id} for no device`);
        // Replay names the chunk directly; live, the filler reserved it before writing the data.
        if (replay) this.space.claimForReplay(r.id);
        else this.space.commitReserved(r.id);
        for (let i = 1; i < targets.length; i++) this.space.ref(r.id);
        for (const d of targets) {
          if (r.chunk >= this.chunksFor(d.sizeBytes)) {
            throw new SnapblockError(
              "CORRUPT",
              `fill maps chunk ${r.chunk} beyond the end of device ${d.id}`,
            );
          }
          this.tables.set(d.table, r.chunk, r.id, seq);
          this.settle(d, r.chunk);
        }
        return;
      }
      case RecordType.FillHole:
        for (const id of r.ids) {
          const d = this.device(id);
          this.tables.set(d.table, r.id, -1, seq);
          this.settle(d, r.id);
        }
        return;
      case RecordType.CopyState:
        this.device(r.id).copying = r.copying;
        return;
      case RecordType.Protect: {
        const d = this.device(r.id);
        if (d.kind !== "volume")
          throw new SnapblockError("CORRUPT", `protection policy set on snapshot ${d.id}`);
        if (r.policy === "") delete d.protection;
        else d.protection = r.policy;
        return;
      }
      case RecordType.Annotate: {
        const d = this.device(r.id);
        if (Object.keys(r.map).length === 0) delete d.annotations;
        else d.annotations = { ...r.map };
        return;
      }
      case RecordType.Note:
        this.setNote(r.id, r.name, r.map);
        return;
      case RecordType.Pin: {
        const d = this.device(r.id);
        if (d.kind !== "snapshot") throw new SnapblockError("CORRUPT", `pin of volume ${d.id}`);
        if (r.pinned) d.pinned = true;
        else delete d.pinned;
        return;
      }
      case RecordType.MapPartial: {
        const d = this.claimMapped(r, replay);
        if (d.pending?.has(r.chunk)) {
          // The data path fills a pending chunk before writing part of it.
          throw new SnapblockError("CORRUPT", `partial write to pending chunk ${r.chunk} of device ${d.id}`);
        }
        if (r.backing >= 0 && this.space.refCount(r.backing) === 0) {
          throw new SnapblockError(
            "CORRUPT",
            `partial chunk ${r.phys} is backed by unreferenced chunk ${r.backing}`,
          );
        }
        // The partial takes its reference on the backing chunk before the leaf drops its own.
        this.space.setPartial(r.phys, r.backing, r.valid, { device: d.id, chunk: r.chunk });
        this.tables.set(d.table, r.chunk, r.phys, seq);
        return;
      }
      case RecordType.PartialValid: {
        const partial = this.space.partials.get(r.id);
        if (!partial)
          throw new SnapblockError("CORRUPT", `record updates chunk ${r.id}, which is not partial`);
        this.space.updatePartial(partial, r.valid);
        return;
      }
      case RecordType.PartialDone:
        if (!this.space.partials.has(r.id)) {
          throw new SnapblockError("CORRUPT", `record completes chunk ${r.id}, which is not partial`);
        }
        this.space.completePartial(r.id, seq);
        return;
    }
  }
}
