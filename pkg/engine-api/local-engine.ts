import { randomUUID } from "node:crypto";
import { SnapblockError, isSnapblockError, StatusError } from "../errors/index.js";
import {
  DEFAULT_POINT_SHARE,
  MAX_DEVICE_BYTES,
  PointScheduler,
  parseProtectionPolicy,
  Pool,
  type BlockDevice,
  type ChunkFetcher,
  type ChunkList,
  type DataIo,
  type EngineObserver,
  type PendingInfo,
  type PoolStats,
  type PoolUsageEvent,
  type PointsDeletedEvent,
  type SnapshotInfo,
  type VolumeInfo,
  type WriteHold,
} from "../engine/index.js";
import type {
  EngineApi,
  EngineBlockMetadataPage,
  EngineBlockMetadataRequest,
  EngineCapacity,
  EngineCreateSnapshotOptions,
  EngineCreateSnapshotGroupOptions,
  EngineCreateVolumeOptions,
  EngineHolder,
  EngineListing,
  EngineMeta,
  EnginePlacementRequest,
  EnginePointPins,
  EnginePointsDropped,
  EnginePullProgress,
  EngineReplicateOptions,
  EngineReplication,
  EngineSnapshot,
  EngineSpace,
  EngineVolume,
  VolumeQuiescer,
  AttachmentHealthSource,
  EngineTombstone,
} from "./engine-api.js";
import { REPLICA_META, replicaName } from "./replica-name.js";
import type { Logger } from "../log/index.js";
import { checkEngineMeta } from "./engine-meta.js";
import { importLegacyMetadata } from "./legacy-metadata-file.js";
import { MetadataStore } from "./metadata-store.js";

export interface LocalEngineOptions {
  /** The node this pool belongs to (part of every volume and snapshot id). */
  nodeId: string;
  /** Directory of the pool. */
  poolDir: string;
  /**
   * Where an earlier release kept the CSI metadata (a JSON file): imported into the pool's journal
   * once at open, then renamed to `<file>.imported` (legacy-metadata-file.ts). The metadata itself
   * lives in the pool (metadata-store.ts).
   */
  metadataFile?: string;
  /** Create the pool with these settings when the directory holds none yet. */
  createIfMissing?: { sizeBytes: number; chunkSize?: number };
  /** The data file through the page cache or O_DIRECT (default "buffered"; pkg/engine DataIo). */
  dataIo?: DataIo;
  /**
   * Thin-provisioning limit: the sum of volume sizes may reach the pool size times this
   * (default 1: no overcommit, so a pool can never run out of space by writes alone).
   */
  overcommitRatio?: number;
  /** Metrics hooks of the pool (pkg/metrics implements them). */
  observer?: EngineObserver;
  /**
   * How this node reaches snapshots on other nodes (the engine service's client side); without
   * it, cross-node restores and replicas are refused.
   */
  remote?: RemoteContent;
  /** Background pull bandwidth limit, bytes per second (0: none). */
  pullBytesPerSecond?: number;
  /** How long tombstones of deleted snapshots are kept (default 30 days). */
  tombstoneMs?: number;
  /** Where the end of a cross-node copy, and the pool's crossings of 80/90/100 % use, are logged. */
  logger?: Logger;
  /**
   * The recovery-point scheduler (docs/protection.md): the share of the pool's free space points
   * may hold (default 0.25), how often it runs in ms (default 1000; 0: not at all), and the least
   * time between two accountings of the points' space in ms (default 10000); its clock in ms
   * (default Date.now; tests simulate one).
   */
  points?: { maxShareOfFree?: number; tickMs?: number; spaceCheckMs?: number; now?: () => number };
}

/**
 * Reading a snapshot that other nodes hold (implemented over the engine service). Chunk numbers
 * are in this node's chunk size, whatever the holder's is.
 */
export interface RemoteContent {
  /**
   * The chunks to fetch, as runs: the holder's allocated chunks of its snapshot, or only those
   * that differ from `baseOrigin` (an earlier snapshot of the same volume) when it can tell.
   */
  chunkRuns(o: {
    holders: EngineHolder[];
    chunkSize: number;
    baseOrigin?: string;
  }): Promise<{ runs: [number, number][]; sizeBytes: number; incremental: boolean }>;
  /** Fetches chunk contents from the holders (the first that answers). */
  fetcher(holders: EngineHolder[], chunkSize: number): ChunkFetcher;
}

/** A read-write handle on a volume's blocks, for the node plugin (NBD export). */
export type VolumeDevice = BlockDevice & { close(): void };

/**
 * The in-process EngineApi: a Pool of pkg/engine plus the CSI metadata store. It is also what the
 * node plugin opens volumes through (openVolumeDevice), since the node always holds its pool.
 */
export class LocalEngine implements EngineApi, EngineReplication, EnginePointPins {
  readonly nodeId: string;
  private pool: Pool | undefined;
  private meta: MetadataStore | undefined;
  private closing = false;
  private readonly overcommit: number;
  private readonly replicating = new Map<string, Promise<EngineSnapshot>>();
  private quiescer: VolumeQuiescer | undefined;
  private attachmentHealth: AttachmentHealthSource | undefined;
  private points: PointScheduler | undefined;
  /** Recovery points deleted for space since open, by volume (capacity() reports them). */
  private readonly pointsDropped = new Map<string, EnginePointsDropped>();
  /** Write holds of group snapshots across nodes, by id, until released (or expired a while). */
  private readonly holds = new Map<string, WriteHold>();

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

  /**
   * The node side's quiescer (the node data path): snapshots of volumes it has staged with a
   * filesystem are taken with that filesystem frozen. Without one, snapshots are crash-consistent.
   */
  useQuiescer(quiescer: VolumeQuiescer): void {
    this.quiescer = quiescer;
  }

  /**
   * The node's data plane: volumes whose block device here is broken say so (and why) wherever
   * the engine's volumes are shown (ControllerGetVolume and ListVolumes' volume condition).
   */
  useAttachmentHealth(source: AttachmentHealthSource): void {
    this.attachmentHealth = source;
  }

  /** Opens (or creates) the pool and the metadata store; Probe reports ready afterwards. */
  /**
   * Opens the pool, or creates it when missing and allowed. `recovery`: what the pool replayed
   * from its journal (0 and 0 after a clean close; see Pool.recovery).
   */
  async open(): Promise<{ created: boolean; recovery: { replayedBatches: number; tornBytes: number } }> {
    let created = false;
    let pool: Pool;
    try {
      pool = await Pool.open({
        dir: this.options.poolDir,
        observer: this.observer(),
        ...(this.options.dataIo ? { dataIo: this.options.dataIo } : {}),
      });
    } catch (err) {
      if (!isSnapblockError(err, "NOT_FOUND") || !this.options.createIfMissing) throw err;
      pool = await Pool.create({
        dir: this.options.poolDir,
        observer: this.observer(),
        ...(this.options.dataIo ? { dataIo: this.options.dataIo } : {}),
        ...this.options.createIfMissing,
      });
      created = true;
    }
    try {
      if (this.options.metadataFile !== undefined) {
        const imported = await importLegacyMetadata(pool, this.options.metadataFile);
        if (imported.found)
          this.options.logger?.info("CSI metadata file imported into the pool", { ...imported });
      }
      this.meta = new MetadataStore(pool);
      this.pool = pool;
      this.resumePulls();
      this.startPoints(pool);
    } catch (err) {
      this.pool = undefined;
      await pool.close();
      throw err;
    }
    return { created, recovery: pool.recovery };
  }

  isReady(): boolean {
    return this.pool !== undefined && !this.closing;
  }

  /**
   * The pool's hooks: the caller's metrics, a log line when a copy from another node ends, a
   * warning and a count for capacity() when recovery points are deleted for space, and a log
   * line when the pool's use crosses a level (80/90/100 %: warnings going up).
   */
  private observer(): EngineObserver {
    const base = this.options.observer ?? {};
    const logger = this.options.logger;
    const pointsDeleted = (e: PointsDeletedEvent): void => {
      if (e.reason === "space") {
        const seen = this.pointsDropped.get(e.volume);
        this.pointsDropped.set(e.volume, {
          volume: e.volume,
          count: (seen?.count ?? 0) + e.count,
          heldBytes: e.heldBytes ?? 0,
          budgetBytes: e.budgetBytes ?? 0,
          shareOfFree: this.options.points?.maxShareOfFree ?? DEFAULT_POINT_SHARE,
        });
        logger?.warn(
          "recovery points held more than their share of the pool's free space: the oldest were deleted",
          {
            pool: this.options.poolDir,
            volume: e.volume,
            deleted: e.count,
            heldBytes: e.heldBytes,
            budgetBytes: e.budgetBytes,
          },
        );
      }
      base.pointsDeleted?.(e);
    };
    if (!logger) return { ...base, pointsDeleted };
    return {
      ...base,
      pullFinished: (e) => {
        base.pullFinished?.(e);
        logger.info("pull finished", {
          origin: e.source,
          chunks: e.chunks,
          bytes: e.bytes,
          seconds: e.seconds,
        });
      },
      pointsDeleted,
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
        base.usageLevel?.(e);
      },
    };
  }

  /** The pool's statistics for metrics, read at scrape time; undefined until the pool is open. */
  poolStats(): PoolStats | undefined {
    return this.isReady() ? this.pool?.stats({ recent: true }) : undefined;
  }

  /** The pool's use without the space accounting (Pool.usage): cheap enough to sample often. */
  poolUsage(): ReturnType<Pool["usage"]> | undefined {
    return this.isReady() ? this.pool?.usage() : undefined;
  }

  /** Takes and thins the recovery points of the pool's protected volumes until close. */
  private startPoints(pool: Pool): void {
    const logger = this.options.logger;
    this.points = new PointScheduler({
      pool,
      ...(this.options.points?.maxShareOfFree !== undefined
        ? { maxShareOfFree: this.options.points.maxShareOfFree }
        : {}),
      ...(this.options.points?.tickMs !== undefined ? { tickMs: this.options.points.tickMs } : {}),
      ...(this.options.points?.now ? { now: this.options.points.now } : {}),
      ...(this.options.points?.spaceCheckMs !== undefined
        ? { spaceCheckMs: this.options.points.spaceCheckMs }
        : {}),
      onError: (volume, err) =>
        logger?.warn("recovery point failed", { pool: this.options.poolDir, volume, error: err.message }),
    });
    this.points.start();
  }

  /** Closes the pool (after the CSI server has finished its calls). */
  async close(): Promise<void> {
    this.closing = true;
    await this.points?.stop();
    this.points = undefined;
    const pool = this.pool;
    this.pool = undefined;
    if (pool) await pool.close();
  }

  get chunkSize(): number {
    return this.ready().pool.chunkSize;
  }

  async createVolume(o: EngineCreateVolumeOptions): Promise<EngineVolume> {
    // A bad policy is refused before anything is made.
    if (o.protection !== undefined) parseProtectionPolicy(o.protection);
    const created = await this.makeVolume(o);
    if (o.protection === undefined) return created;
    // A crash between the two leaves an unprotected volume; the controller sets the policy again
    // when a retried CreateVolume finds it without one.
    return this.setProtection(o.name, o.protection);
  }

  private async makeVolume(o: EngineCreateVolumeOptions): Promise<EngineVolume> {
    checkEngineMeta(o.meta, `volume '${o.name}'`);
    const { pool } = this.ready();
    if (absentAsUndefined(() => pool.getVolume(o.name))) {
      throw new SnapblockError("ALREADY_EXISTS", `volume '${o.name}' already exists`);
    }
    if (o.source?.nodeId !== undefined && o.source.nodeId !== this.nodeId) return this.createFromOtherNode(o);
    // The metadata is the volume's annotations, in the same commit as the volume: after a crash
    // there is either both or neither.
    const annotations = o.meta;
    const restore = { sizeBytes: o.sizeBytes, fullCopy: o.fullCopy ?? false, annotations };
    if (!o.source) await pool.createVolume(o.name, o.sizeBytes, { annotations });
    else if (o.source.kind === "snapshot") await pool.restoreSnapshot(o.source.name, o.name, restore);
    else await pool.cloneVolume(o.source.name, o.name, restore);
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

  /**
   * Adds or changes metadata keys of an existing volume (the node records what it learns about a
   * volume's use, e.g. raw block use). NOT_FOUND when there is no such volume.
   */
  async updateVolumeMeta(name: string, patch: EngineMeta): Promise<EngineVolume> {
    const { pool, meta } = this.ready();
    const info = pool.getVolume(name);
    await meta.set("volume", name, { ...meta.get("volume", name), ...patch });
    return this.volume(info);
  }

  async pinPoint(name: string, pinned: boolean): Promise<EngineSnapshot> {
    return this.snapshot(await this.ready().pool.pinPoint(name, pinned));
  }

  async setProtection(name: string, policy: string): Promise<EngineVolume> {
    const { pool } = this.ready();
    return this.volume(await pool.setProtection(name, policy));
  }

  async resizeVolume(name: string, sizeBytes: number): Promise<EngineVolume> {
    const { pool } = this.ready();
    return this.volume(await pool.resizeVolume(name, sizeBytes));
  }

  async deleteVolume(name: string): Promise<void> {
    // Its metadata goes with it (the same record).
    await this.ready().pool.deleteVolume(name);
  }

  async createSnapshot(o: EngineCreateSnapshotOptions): Promise<EngineSnapshot> {
    checkEngineMeta(o.meta, `snapshot '${o.name}'`);
    const { pool } = this.ready();
    if (absentAsUndefined(() => pool.getSnapshot(o.name))) {
      throw new SnapblockError("ALREADY_EXISTS", `snapshot '${o.name}' already exists`);
    }
    // One commit: the snapshot and its metadata (annotations) in the same journal batch.
    const take = () =>
      pool.createSnapshot(o.volume, o.name, {
        annotations: o.meta,
        ...(o.limits ? { limits: o.limits } : {}),
      });
    try {
      if (o.freezeFilesystem !== false && this.quiescer) await this.quiescer.quiesce(o.volume, take);
      else await take();
    } catch (err) {
      // ALREADY_EXISTS: a concurrent request made it first; what it made stays.
      if (isSnapblockError(err, "ALREADY_EXISTS")) throw err;
      // A failed call leaves nothing: not even a snapshot the quiescer could not keep consistent
      // until it was taken (thawed early), which a retry would otherwise find and return.
      if (absentAsUndefined(() => pool.getSnapshot(o.name))) await pool.deleteSnapshot(o.name);
      throw err;
    }
    return this.snapshot(pool.getSnapshot(o.name));
  }

  async createSnapshotGroup(o: EngineCreateSnapshotGroupOptions): Promise<EngineSnapshot[]> {
    for (const m of o.members) checkEngineMeta(m.meta, `snapshot '${m.name}'`);
    const { pool } = this.ready();
    let hold: WriteHold | undefined;
    if (o.holdId !== undefined) {
      hold = this.holds.get(o.holdId);
      if (!hold) {
        throw new SnapblockError(
          "CANCELLED",
          `the hold on writes ${o.holdId} is not known here (expired, released, or this node restarted); nothing was taken`,
        );
      }
    }
    // Every member with its metadata (annotations), all in one commit.
    const pairs = o.members.map((m) => ({ volume: m.volume, snapshot: m.name, annotations: m.meta }));
    const take = () => pool.createSnapshots(pairs, hold ? { hold } : {});
    // Members that exist already: the pool answers (idempotent retry, or ALREADY_EXISTS) and
    // their metadata stays as it is.
    return (await take()).map((s) => this.snapshot(s));
  }

  async holdWrites(o: { volumes: string[]; timeoutMs: number }): Promise<{ holdId: string }> {
    const { pool } = this.ready();
    if (!(o.timeoutMs > 0) || !Number.isFinite(o.timeoutMs)) {
      throw new SnapblockError(
        "INVALID_ARGUMENT",
        `a hold on writes needs a time limit (got ${o.timeoutMs} ms)`,
      );
    }
    const hold = await pool.holdWrites(o.volumes, { timeoutMs: o.timeoutMs });
    const holdId = randomUUID();
    this.holds.set(holdId, hold);
    // A hold nobody releases (its caller died) has let the writes go by itself; forget it later.
    setTimeout(() => this.holds.delete(holdId), o.timeoutMs + 60_000).unref();
    return { holdId };
  }

  releaseWrites(holdId: string): Promise<{ heldThroughout: boolean }> {
    const hold = this.holds.get(holdId);
    this.holds.delete(holdId);
    return Promise.resolve(hold ? hold.release() : { heldThroughout: false });
  }

  async putGroupRecord(name: string, record: EngineMeta): Promise<void> {
    checkEngineMeta(record, `group snapshot '${name}'`);
    await this.ready().meta.set("group", name, record);
  }

  getGroupRecord(name: string): Promise<EngineMeta | undefined> {
    const { meta } = this.ready();
    return Promise.resolve(meta.has("group", name) ? meta.get("group", name) : undefined);
  }

  async deleteGroupRecord(name: string): Promise<void> {
    await this.ready().meta.deleteGroup(name);
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
    // Its metadata goes with it (the same record).
    await this.ready().pool.deleteSnapshot(name);
  }

  async *blockMetadata(request: EngineBlockMetadataRequest): AsyncGenerator<EngineBlockMetadataPage> {
    const { maxResults } = request;
    if (!Number.isInteger(maxResults) || maxResults < 1) {
      throw new SnapblockError(
        "INVALID_ARGUMENT",
        `max results per page must be at least 1, not ${maxResults}`,
      );
    }
    const { pool } = this.ready();
    const cursor =
      request.baseSnapshot === undefined
        ? pool.allocatedRanges(request.snapshot, request.startingOffset)
        : pool.changedRanges(request.baseSnapshot, request.snapshot, request.startingOffset);
    const { sizeBytes } = cursor;
    let sent = false;
    while (!cursor.done) {
      this.ready(); // a pool closing ends the listing (CLOSED) rather than reading a closed pool
      const ranges = cursor.next(maxResults);
      if (ranges.length > 0) {
        sent = true;
        yield { sizeBytes, ranges };
      } else {
        // A page that found nothing in its bounded stretch (a large clean region): let other
        // work run before the next one.
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    }
    // Nothing at all still tells the reader the snapshot's size.
    if (!sent) yield { sizeBytes, ranges: [] };
  }

  /**
   * A volume from a snapshot on another node: from a complete local replica when there is one
   * (instant, metadata only), else ready at once with the snapshot's allocated chunks pending,
   * fetched on demand and pulled in the background from the holders.
   */
  private async createFromOtherNode(o: EngineCreateVolumeOptions): Promise<EngineVolume> {
    const { pool } = this.ready();
    const source = o.source!;
    if (source.kind !== "snapshot") {
      throw new StatusError(
        "FAILED_PRECONDITION",
        `volume ${source.nodeId}/${source.name} is on another node: clone it through a snapshot`,
      );
    }
    const origin = `${source.nodeId}/${source.name}`;
    const local = absentAsUndefined(() => pool.getSnapshot(replicaName(origin)));
    if (local && !local.pending) {
      return this.createVolume({ ...o, source: { kind: "snapshot", name: local.name } });
    }
    const holders = source.holders ?? [];
    const remote = this.remoteOrFail(holders, origin);
    const { runs, sizeBytes: sourceBytes } = await remote.chunkRuns({ holders, chunkSize: pool.chunkSize });
    if (o.sizeBytes < sourceBytes) {
      throw new SnapblockError(
        "OUT_OF_RANGE",
        `volume size ${o.sizeBytes} is smaller than its source snapshot ${origin} (${sourceBytes} bytes)`,
      );
    }
    await pool.createFromSource({
      kind: "volume",
      name: o.name,
      sizeBytes: o.sizeBytes,
      source: origin,
      ranges: runs,
      annotations: { ...o.meta, [REPLICA_META.holders]: JSON.stringify(holders) },
    });
    this.startPull(origin, holders);
    return this.volume(pool.getVolume(o.name));
  }

  async replicateSnapshot(o: EngineReplicateOptions): Promise<EngineSnapshot> {
    checkEngineMeta(o.meta, `replica of ${o.origin}`);
    const name = replicaName(o.origin);
    // One replica per snapshot: a second request while the first is being made (the controller's
    // background start racing its repair loop) waits for it and answers the same.
    const running = this.replicating.get(name);
    if (running) {
      await running.catch(() => undefined);
      const made = absentAsUndefined(() => this.ready().pool.getSnapshot(name));
      if (made) return this.snapshot(made);
    }
    const attempt = this.makeReplica(name, o);
    this.replicating.set(name, attempt);
    try {
      return await attempt;
    } finally {
      if (this.replicating.get(name) === attempt) this.replicating.delete(name);
    }
  }

  private async makeReplica(name: string, o: EngineReplicateOptions): Promise<EngineSnapshot> {
    const { pool, meta } = this.ready();
    const existing = absentAsUndefined(() => pool.getSnapshot(name));
    if (existing) {
      // Made before (the pull goes on, or is done) - unless it copies another incarnation of a
      // snapshot of the same name (deleted and taken again): that one is the repair loop's to remove.
      const had = meta.get("snapshot", name)[REPLICA_META.originId];
      const wanted = o.meta[REPLICA_META.originId];
      if (had !== undefined && wanted !== undefined && had !== wanted) {
        throw new StatusError(
          "FAILED_PRECONDITION",
          `this node still holds a copy of an earlier snapshot named ${o.origin} (deleted since); it is removed first`,
        );
      }
      return this.snapshot(existing);
    }
    const remote = this.remoteOrFail(o.holders, o.origin);
    const base = o.baseOrigin
      ? absentAsUndefined(() => pool.getSnapshot(replicaName(o.baseOrigin!)))
      : undefined;
    const usable = base && !base.pending && base.sizeBytes <= o.sizeBytes ? base : undefined;
    const content = await remote.chunkRuns({
      holders: o.holders,
      chunkSize: pool.chunkSize,
      ...(usable ? { baseOrigin: o.baseOrigin! } : {}),
    });
    await pool.createFromSource({
      kind: "snapshot",
      name,
      sizeBytes: Math.max(o.sizeBytes, content.sizeBytes),
      source: o.origin,
      ranges: content.runs,
      ...(usable && content.incremental ? { base: { kind: "snapshot" as const, name: usable.name } } : {}),
      annotations: {
        ...o.meta,
        [REPLICA_META.origin]: o.origin,
        [REPLICA_META.holders]: JSON.stringify(o.holders),
      },
    });
    this.startPull(o.origin, o.holders);
    this.options.logger?.info("replica started", {
      origin: o.origin,
      chunks: content.runs.reduce((n, [, count]) => n + count, 0),
      incremental: Boolean(usable && content.incremental),
      ...(usable && content.incremental ? { base: o.baseOrigin } : {}),
    });
    return this.snapshot(pool.getSnapshot(name));
  }

  async setHolders(origin: string, holders: EngineHolder[]): Promise<void> {
    const { pool, meta } = this.ready();
    const entry = pool.pendingSources().find((s) => s.source === origin);
    if (!entry) return; // nothing waits for it any more
    // Every device waiting for the source, in one commit.
    await meta.setAll(
      entry.devices.map((d) => ({
        kind: d.kind,
        name: d.name,
        meta: { ...meta.get(d.kind, d.name), [REPLICA_META.holders]: JSON.stringify(holders) },
      })),
    );
    this.startPull(origin, holders);
  }

  async grantPull(name: string, nodeId: string): Promise<void> {
    const { pool, meta } = this.ready();
    pool.getSnapshot(name); // NOT_FOUND for an unknown snapshot
    const current = meta.get("snapshot", name);
    const grants = new Set((current[REPLICA_META.pullGrants] ?? "").split(",").filter(Boolean));
    if (grants.has(nodeId)) return;
    grants.add(nodeId);
    await meta.set("snapshot", name, { ...current, [REPLICA_META.pullGrants]: [...grants].join(",") });
  }

  /** Whether node `nodeId` was allowed to read snapshot `name` (the engine service asks). */
  allowsPull(name: string, nodeId: string): boolean {
    const grants = this.ready().meta.get("snapshot", name)[REPLICA_META.pullGrants] ?? "";
    return grants.split(",").includes(nodeId);
  }

  async addTombstones(tombstones: EngineTombstone[]): Promise<void> {
    await this.ready().meta.addTombstones(
      tombstones,
      new Date(),
      this.options.tombstoneMs ?? 30 * 86_400_000,
    );
  }

  listTombstones(): Promise<EngineTombstone[]> {
    return Promise.resolve(this.ready().meta.tombstones());
  }

  /** Chunks that differ between two snapshots of this pool (incremental copies, changed blocks). */
  changedChunks(base: string, name: string): ChunkList {
    return this.ready().pool.changedChunks(base, name);
  }

  private remoteOrFail(holders: EngineHolder[], origin: string): RemoteContent {
    if (!this.options.remote) {
      throw new StatusError("UNIMPLEMENTED", `this node cannot reach other nodes' snapshots (${origin})`);
    }
    if (holders.length === 0) {
      throw new SnapblockError("NOT_FOUND", `no node holding snapshot ${origin} is known`);
    }
    return this.options.remote;
  }

  private startPull(origin: string, holders: EngineHolder[]): void {
    const { pool } = this.ready();
    if (!this.options.remote || holders.length === 0) return;
    pool.setChunkFetcher(origin, this.options.remote.fetcher(holders, pool.chunkSize), {
      bytesPerSecond: this.options.pullBytesPerSecond ?? 0,
    });
  }

  /** After open: pulls that were running go on, from the holders each device remembers. */
  private resumePulls(): void {
    const { pool, meta } = this.ready();
    for (const entry of pool.pendingSources()) {
      for (const d of entry.devices) {
        const raw = meta.get(d.kind, d.name)[REPLICA_META.holders];
        const holders = raw ? parseHolders(raw) : [];
        if (holders.length > 0) {
          this.startPull(entry.source, holders);
          break;
        }
      }
    }
  }

  private pullOf(p: PendingInfo | undefined): EnginePullProgress | undefined {
    if (!p) return undefined;
    const progress = this.ready().pool.pullProgress(p.source);
    return {
      origin: p.source,
      pendingChunks: p.chunks,
      totalChunks: p.totalChunks,
      state: progress?.state ?? "stalled",
      bytes: progress?.bytes ?? 0,
      rate: progress?.rate ?? 0,
      ...(progress?.error ? { error: progress.error } : {}),
    };
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
      ...(this.pointsDropped.size > 0
        ? { pointsDroppedForSpace: [...this.pointsDropped.values()].map((d) => ({ ...d })) }
        : {}),
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
        pointCount: v.pointCount,
        protection: v.protection ?? "",
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
    const pull = this.pullOf(v.pending);
    if (pull) out.pull = pull;
    if (v.protection !== undefined) out.protection = v.protection;
    const problem = this.attachmentHealth?.attachmentProblem(v.name);
    if (problem !== undefined) out.attachmentProblem = problem;
    return out;
  }

  private snapshot(s: SnapshotInfo): EngineSnapshot {
    const pull = this.pullOf(s.pending);
    return {
      name: s.name,
      id: s.id,
      sizeBytes: s.sizeBytes,
      createdAt: s.createdAt,
      sourceVolume: s.sourceVolume,
      ...(pull ? { pull } : {}),
      ...(s.pinned ? { pinned: true } : {}),
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

function parseHolders(raw: string): EngineHolder[] {
  try {
    const list = JSON.parse(raw) as unknown;
    if (!Array.isArray(list)) return [];
    return list.filter(
      (h): h is EngineHolder =>
        typeof h === "object" &&
        h !== null &&
        typeof (h as EngineHolder).nodeId === "string" &&
        typeof (h as EngineHolder).address === "string" &&
        typeof (h as EngineHolder).name === "string",
    );
  } catch {
    return []; // a damaged record only loses the route; setHolders from the controller restores it
  }
}
