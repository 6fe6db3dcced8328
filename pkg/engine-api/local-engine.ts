import { SnapblockError, isSnapblockError, StatusError } from "../errors/index.js";
import {
  MAX_DEVICE_BYTES,
  Pool,
  type BlockDevice,
  type EngineObserver,
  type PoolStats,
  type PoolUsageEvent,
  type SnapshotInfo,
  type VolumeInfo,
} from "../engine/index.js";
import type { Logger } from "../log/index.js";
import type {
  EngineApi,
  EngineCapacity,
  EngineCreateSnapshotOptions,
  EngineCreateVolumeOptions,
  EngineListing,
  EnginePlacementRequest,
  EngineSnapshot,
  EngineSpace,
  EngineVolume,
} from "./engine-api.js";
import { MetadataStore } from "./metadata-store.js";

export interface LocalEngineOptions {
  /** The node this pool belongs to (part of every volume and snapshot id). */
  nodeId: string;
  /** Directory of the pool. */
  poolDir: string;
  /** JSON side store of the CSI metadata (metadata-store.ts). */
  metadataFile: string;
  /** Create the pool with these settings when the directory holds none yet. */
  createIfMissing?: { sizeBytes: number; chunkSize?: number };
  /**
   * Thin-provisioning limit: the sum of volume sizes may reach the pool size times this
   * (default 1: no overcommit, so a pool can never run out of space by writes alone).
   */
  overcommitRatio?: number;
  /** Metrics hooks of the pool (pkg/metrics implements them). */
  observer?: EngineObserver;
  /** Where the pool's crossings of 80/90/100 % use are logged (as warnings going up). */
  logger?: Logger;
}

/** A read-write handle on a volume's blocks, for the node plugin (NBD export). */
export type VolumeDevice = BlockDevice & { close(): void };

/**
 * The in-process EngineApi: a Pool of pkg/engine plus the CSI metadata store. It is also what the
 * node plugin opens volumes through (openVolumeDevice), since the node always holds its pool.
 */
export class LocalEngine implements EngineApi {
  readonly nodeId: string;
  private pool: Pool | undefined;
  private meta: MetadataStore | undefined;
  private closing = false;
  private readonly overcommit: number;

  constructor(private readonly options: LocalEngineOptions) {
    this.nodeId = options.nodeId;
    this.overcommit = options.overcommitRatio ?? 1;
    if (!(this.overcommit >= 1) || !Number.isFinite(this.overcommit)) {
      throw new SnapblockError(
        "INVALID_ARGUMENT",
        `overcommit ratio ${this.overcommit} must be a number >= 1`,
      );
    }
  }

  /** Opens (or creates) the pool and the metadata store; Probe reports ready afterwards. */
  async open(): Promise<{ created: boolean }> {
    let created = false;
    let pool: Pool;
    const observer = this.observer();
    try {
      pool = await Pool.open({ dir: this.options.poolDir, observer });
    } catch (err) {
      if (!isSnapblockError(err, "NOT_FOUND") || !this.options.createIfMissing) throw err;
      pool = await Pool.create({
        dir: this.options.poolDir,
        observer,
        ...this.options.createIfMissing,
      });
      created = true;
    }
    try {
      const meta = await MetadataStore.open(this.options.metadataFile);
      const volumes = new Set(pool.listVolumes().map((v) => v.name));
      const snapshots = new Set(pool.listSnapshots().map((s) => s.name));
      await meta.prune("volume", (n) => volumes.has(n));
      await meta.prune("snapshot", (n) => snapshots.has(n));
      this.meta = meta;
    } catch (err) {
      await pool.close();
      throw err;
    }
    this.pool = pool;
    return { created };
  }

  isReady(): boolean {
    return this.pool !== undefined && !this.closing;
  }

  /** The pool's observer: the metrics hooks, plus a log line when the pool's use crosses a level. */
  private observer(): EngineObserver {
    const given = this.options.observer ?? {};
    const logger = this.options.logger;
    if (!logger) return given;
    return {
      ...given,
      usageLevel: (e: PoolUsageEvent) => {
        const fields = {
          pool: this.options.poolDir,
          usageLevel: e.level,
          previousLevel: e.previous,
          usedBytes: e.usedBytes,
          sizeBytes: e.sizeBytes,
        };
        if (e.level > e.previous) {
          logger.warn(
            e.full || e.level >= 100
              ? "the pool is full: writes that need new chunks fail with ENOSPC (NBD) until space is freed; delete snapshots or volumes"
              : `the pool is over ${e.level}% full; delete snapshots or volumes before it fills`,
            fields,
          );
        } else logger.info(`the pool is back below ${e.previous}% full`, fields);
        given.usageLevel?.(e);
      },
    };
  }

  /** The pool's statistics for metrics, read at scrape time; undefined until the pool is open. */
  poolStats(): PoolStats | undefined {
    return this.isReady() ? this.pool?.stats({ recent: true }) : undefined;
  }

  /** Closes the pool (after the CSI server has finished its calls). */
  async close(): Promise<void> {
    this.closing = true;
    const pool = this.pool;
    this.pool = undefined;
    if (pool) await pool.close();
  }

  get chunkSize(): number {
    return this.ready().pool.chunkSize;
  }

  async createVolume(o: EngineCreateVolumeOptions): Promise<EngineVolume> {
    const { pool, meta } = this.ready();
    if (absentAsUndefined(() => pool.getVolume(o.name))) {
      throw new SnapblockError("ALREADY_EXISTS", `volume '${o.name}' already exists`);
    }
    // Metadata first: a crash after this write leaves an entry without a volume, which open()
    // prunes and a retried CreateVolume overwrites; the reverse order would leave a volume the
    // CSI layer cannot recognise.
    await meta.set("volume", o.name, o.meta);
    try {
      const restore = { sizeBytes: o.sizeBytes, fullCopy: o.fullCopy ?? false };
      if (!o.source) await pool.createVolume(o.name, o.sizeBytes);
      else if (o.source.kind === "snapshot") await pool.restoreSnapshot(o.source.name, o.name, restore);
      else await pool.cloneVolume(o.source.name, o.name, restore);
    } catch (err) {
      await meta.delete("volume", o.name);
      throw err;
    }
    return this.volume(pool.getVolume(o.name));
  }

  getVolume(name: string): Promise<EngineVolume | undefined> {
    const { pool } = this.ready();
    const info = absentAsUndefined(() => pool.getVolume(name));
    return Promise.resolve(info ? this.volume(info) : undefined);
  }

  listVolumes(): Promise<EngineListing<EngineVolume>> {
    const { pool } = this.ready();
    return Promise.resolve({
      items: pool.listVolumes().map((v) => this.volume(v)),
      idWatermark: pool.meta.nextId,
    });
  }

  async resizeVolume(name: string, sizeBytes: number): Promise<EngineVolume> {
    const { pool } = this.ready();
    return this.volume(await pool.resizeVolume(name, sizeBytes));
  }

  async deleteVolume(name: string): Promise<void> {
    const { pool, meta } = this.ready();
    await pool.deleteVolume(name);
    await meta.delete("volume", name);
  }

  async createSnapshot(o: EngineCreateSnapshotOptions): Promise<EngineSnapshot> {
    const { pool, meta } = this.ready();
    if (absentAsUndefined(() => pool.getSnapshot(o.name))) {
      throw new SnapblockError("ALREADY_EXISTS", `snapshot '${o.name}' already exists`);
    }
    await meta.set("snapshot", o.name, o.meta);
    try {
      await pool.createSnapshot(o.volume, o.name, o.limits ? { limits: o.limits } : {});
    } catch (err) {
      await meta.delete("snapshot", o.name);
      throw err;
    }
    return this.snapshot(pool.getSnapshot(o.name));
  }

  getSnapshot(name: string): Promise<EngineSnapshot | undefined> {
    const { pool } = this.ready();
    const info = absentAsUndefined(() => pool.getSnapshot(name));
    return Promise.resolve(info ? this.snapshot(info) : undefined);
  }

  listSnapshots(): Promise<EngineListing<EngineSnapshot>> {
    const { pool } = this.ready();
    return Promise.resolve({
      items: pool.listSnapshots().map((s) => this.snapshot(s)),
      idWatermark: pool.meta.nextId,
    });
  }

  async deleteSnapshot(name: string): Promise<void> {
    const { pool, meta } = this.ready();
    await pool.deleteSnapshot(name);
    await meta.delete("snapshot", name);
  }

  capacity(): Promise<EngineCapacity> {
    const { pool } = this.ready();
    const stats = pool.usage();
    const provisionedBytes = stats.provisionedBytes;
    const headroom = Math.floor(stats.sizeBytes * this.overcommit) - provisionedBytes;
    // The provisioning headroom is only true while the pool has the chunks behind it: snapshots
    // (and full copies under way) take space no volume size accounts for.
    const usable = Math.floor(Math.max(0, stats.freeBytes - stats.copyReservedBytes) * this.overcommit);
    return Promise.resolve({
      totalBytes: stats.sizeBytes,
      freeBytes: stats.freeBytes,
      provisionedBytes,
      availableBytes: Math.max(0, Math.min(headroom, usable)),
      maxVolumeBytes: MAX_DEVICE_BYTES,
    });
  }

  async space(): Promise<EngineSpace> {
    const { pool } = this.ready();
    await pool.refreshSpace();
    const st = pool.stats({ recent: true });
    return Promise.resolve({
      pool: {
        totalBytes: st.sizeBytes,
        allocatedBytes: st.allocatedBytes,
        freeBytes: st.freeBytes,
        provisionedBytes: st.provisionedBytes,
        overcommitRatio: this.overcommit,
        reclaimableBytes: st.reclaimableBytes,
        copyReservedBytes: st.copyReservedBytes,
        sharedBytes: st.sharedChunks * st.chunkSize,
        chunkSize: st.chunkSize,
      },
      volumes: st.volumes.map((v) => ({
        name: v.name,
        sizeBytes: v.sizeBytes,
        mappedBytes: v.totalBytes,
        exclusiveBytes: v.exclusiveBytes,
        sharedBytes: v.sharedBytes,
        snapshotOnlyBytes: v.snapshotOnlyBytes,
        snapshotCount: v.snapshotCount,
      })),
      snapshots: st.snapshots.map((s) => ({
        name: s.name,
        sourceVolume: s.sourceVolume,
        sizeBytes: s.sizeBytes,
        mappedBytes: s.totalBytes,
        exclusiveBytes: s.exclusiveBytes,
        sharedBytes: s.sharedBytes,
      })),
    });
  }

  engineFor(nodeId: string): EngineApi | undefined {
    return nodeId === this.nodeId ? this : undefined;
  }

  nodeEngines(): EngineApi[] {
    return [this];
  }

  /** One pool: the volume goes here, if the request allows this node. */
  placeVolume(request: EnginePlacementRequest): Promise<EngineApi> {
    if (request.requisite && !request.requisite.includes(this.nodeId)) {
      // CSI spec, CreateVolume errors: "Unable to provision in accessible_topology".
      return Promise.reject(
        new StatusError(
          "RESOURCE_EXHAUSTED",
          `accessibility_requirements do not include node ${this.nodeId}, the only node this plugin provisions on`,
        ),
      );
    }
    return Promise.resolve(this);
  }

  /** Opens a volume for I/O (node plugin). Close it when done: an open volume cannot be deleted. */
  openVolumeDevice(name: string): VolumeDevice {
    return this.ready().pool.openVolume(name);
  }

  /** Opens a snapshot for reading (read-only NBD exports, verification). */
  openSnapshotDevice(name: string): VolumeDevice {
    return this.ready().pool.openSnapshot(name);
  }

  private ready(): { pool: Pool; meta: MetadataStore } {
    if (this.closing) throw new SnapblockError("CLOSED", "the snapblock pool is shutting down");
    if (!this.pool || !this.meta) {
      throw new SnapblockError("CLOSED", `the snapblock pool at ${this.options.poolDir} is still opening`);
    }
    return { pool: this.pool, meta: this.meta };
  }

  private volume(v: VolumeInfo): EngineVolume {
    const out: EngineVolume = {
      name: v.name,
      id: v.id,
      sizeBytes: v.sizeBytes,
      createdAt: v.createdAt,
      meta: this.ready().meta.get("volume", v.name),
    };
    if (v.source) out.source = { ...v.source };
    if (v.copy) out.copy = { ...v.copy };
    return out;
  }

  private snapshot(s: SnapshotInfo): EngineSnapshot {
    return {
      name: s.name,
      id: s.id,
      sizeBytes: s.sizeBytes,
      createdAt: s.createdAt,
      sourceVolume: s.sourceVolume,
      meta: this.ready().meta.get("snapshot", s.name),
    };
  }
}

/** The engine's getters throw NOT_FOUND for a missing name; here that is a normal answer. */
function absentAsUndefined<T>(get: () => T): T | undefined {
  try {
    return get();
  } catch (err) {
    if (isSnapblockError(err, "NOT_FOUND")) return undefined;
    throw err;
  }
}
