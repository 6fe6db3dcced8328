import { SnapblockError, asSnapblockError } from "../errors/index.js";
import { BlockRangeCursor } from "./block-ranges.js";
import { decodeCheckpoint, encodeCheckpoint } from "./checkpoint.js";
import { ChunkSpace, type Partial as PartialChunk } from "./chunk-space.js";
import { ChunkTables } from "./chunk-tree.js";
import { checkConsistency } from "./consistency-check.js";
import { CopyJob } from "./copy-job.js";
import { DataPath } from "./data-path.js";
import { DeviceHandle } from "./device-handle.js";
import {
  JOURNAL_HEADER_SIZE,
  encodeBatch,
  encodeJournalHeader,
  scanJournal,
  type JournalScan,
} from "./journal.js";
import { ChunkLocks, WriteGate } from "./locks.js";
import { WriteHold } from "./write-hold.js";
import { Metadata, type Device } from "./metadata.js";
import { validateName, validateSize } from "./names.js";
import { isPointName, pointName } from "./point-names.js";
import { parseProtectionPolicy } from "./protection-policy.js";
import { NodeStorage, type DataIo, type IoMode } from "./node-storage.js";
import { PendingFiller, type ChunkFetcher, type PullOptions, type PullProgress } from "./pending-fill.js";
import type { PoolCore } from "./pool-core.js";
import { RecordType, type MetaRecord } from "./records.js";
import { validateStringMap, type StringMap } from "./string-maps.js";
import {
  SpaceMemo,
  accountSpace,
  accountSpaceSliced,
  type SnapshotGroupOf,
  type SpaceAccount,
} from "./space-accounting.js";
import {
  SUPERBLOCK_SIZE,
  decodeSuperblock,
  encodeSuperblock,
  newSuperblock,
  type Superblock,
} from "./superblock.js";
import { readFully, type Storage, type StorageFile } from "./storage.js";
import {
  POOL_USAGE_LEVELS,
  type BlockDevice,
  type CheckReport,
  type ChunkList,
  type CopyProgress,
  type EngineObserver,
  type PendingInfo,
  type PoolStats,
  type SnapshotInfo,
  type SnapshotLimits,
  type SpaceUsage,
  type VolumeInfo,
} from "./types.js";

export const DEFAULT_CHUNK_SIZE = 64 * 1024;
/**
 * Partial chunks taking more memory than this are completed whatever backs them, oldest first
 * (trimPartials); twice this is the hard bound (atPartialCeiling: writes copy whole chunks
 * instead, data-path.ts). Counted by the chunk space's estimate (partialBytes: about 130 bytes a
 * partial chunk, their bitmaps shared, so about 147,000 of them; before the bitmaps were shared a
 * partial chunk took about 300 bytes and the bound was 65,536 of them). A low bound costs first
 * writes: past it each new partial chunk is paid for by completing an old one (bench:nbd's first
 * write after the fifth and sixth snapshots, 1.73x and 1.97x at QD16 past 65,536; BENCHMARKS.md).
 * It was once 4,096 to bound how many partial chunks a later snapshot could capture, since a
 * shared partial chunk was rewritten whole on its next write; now it is redirected to a new
 * partial chunk over the same backing (data-path.ts, "partialOver"), so the bound is for memory.
 */
const PARTIAL_PILE_BYTES = 18 * 1024 * 1024;
/**
 * The background filler makes its copies durable itself after this many bytes: left to the
 * next commit, they piled up in the page cache (hundreds of MiB a second under a point a second)
 * and every commit's data sync, a snapshot's, a point's or a client's FLUSH, waited for them.
 */
const FILL_SYNC_BYTES = 8 * 1024 * 1024;
/**
 * Below this share of the pool free, partial chunks are completed to free their backing chunk
 * even when only snapshots hold them (pool.ts, worthFilling).
 */
const LOW_SPACE_SHARE = 0.1;
/**
 * Tables up to this size (memory of the chunk tables) are accounted synchronously when figures
 * are asked for: a few milliseconds. Larger ones are accounted in slices in the background while
 * the last figures are served (space-accounting.ts, docs/space.md).
 */
const SYNC_ACCOUNTING_BYTES = 1024 * 1024;
/** A usage level is left downwards only this many percent below it (no flapping at the line). */
const USAGE_HYSTERESIS = 2;
const FILES = {
  superblock: "superblock",
  data: "data",
  checkpoint: "checkpoint",
  journal: "journal",
} as const;

export interface PoolOptions {
  /** Directory holding the pool (created if missing). Either `dir` or `storage` is required. */
  dir?: string;
  /** Storage to use instead of a directory (tests use a fault-injecting one). */
  storage?: Storage;
  /** With `dir`: where data I/O runs (see NodeStorageOptions; default "adaptive"). */
  io?: IoMode;
  /** With `dir`: whether the data file goes through the page cache (see NodeStorage's DataIo). */
  dataIo?: DataIo;
  /**
   * Commit metadata in the background when there is something to commit and no commit began in
   * this many ms (checked twice a period), in ms (0: never).
   */
  autoCommitMs?: number;
  /** Write a checkpoint and start a new journal when the journal grows past this many bytes. */
  checkpointBytes?: number;
  /** Copy jobs found unfinished at open are resumed (default true). */
  resumeCopies?: boolean;
  /** Complete partial chunks in the background (default true; tests turn it off to keep them). */
  fillPartials?: boolean;
  /**
   * Partial chunks beyond this many are completed whatever backs them, the hard bound twice that
   * (default: by memory, PARTIAL_PILE_BYTES; tests set a count).
   */
  partialChunkLimit?: number;
  /** Metrics hooks. */
  observer?: EngineObserver;
}

export interface PoolCreateOptions extends PoolOptions {
  /** Capacity of the data area in bytes (rounded down to whole chunks). */
  sizeBytes: number;
  /** Chunk size: a power of two from 4 KiB to 1 MiB (default 64 KiB). */
  chunkSize?: number;
}

/** Pool.pointSpace(): bytes held by recovery points, in total per volume and by each point alone. */
export interface PointSpace {
  /** Per volume name: bytes only its unpinned points map (one or several of them). */
  byVolume: Map<string, number>;
  /** Per unpinned point name: bytes only that point maps (what deleting it alone frees). */
  exclusive: Map<string, number>;
}

export interface SnapshotOptions {
  /** Refuse the snapshot (NO_SPACE) when the volume is at one of these limits. */
  limits?: SnapshotLimits;
  /** The snapshot's annotations, recorded in the same commit as the snapshot. */
  annotations?: StringMap;
}

export interface CreateOptions {
  /** The new device's annotations, recorded in the same commit as the device. */
  annotations?: StringMap;
}

/** Changes of annotations and notes made together in one commit (annotateAll). */
export interface AnnotationChanges {
  devices?: { kind: "volume" | "snapshot"; name: string; annotations: StringMap }[];
  /** `map` undefined removes the entry. */
  notes?: { table: number; name: string; map: StringMap | undefined }[];
}

export interface RestoreOptions extends CreateOptions {
  /** Size of the new volume; at least the source's (default: the source's size). */
  sizeBytes?: number;
  /** Copy every chunk in the background so the new volume shares nothing with its source. */
  fullCopy?: boolean;
}

/**
 * A thin pool on one directory: volumes and snapshots as chunk tables over reference-counted
 * chunks (see docs/engine-format.md for the on-disk format and the durability contract).
 */
export class Pool implements PoolCore {
  readonly meta: Metadata;
  readonly space: ChunkSpace;
  readonly tables: ChunkTables;
  readonly locks = new ChunkLocks();
  readonly observer: EngineObserver;
  private lastCheck: PoolStats["lastCheck"];
  readonly chunkSize: number;
  committedSeq = 0;
  /** performance.now() when the last commit began (backgroundCommit), and the period. */
  private lastCommitStart = -Infinity;
  private autoCommitMs = 0;

  private readonly io: DataPath;
  private readonly filler: PendingFiller;
  private readonly gates = new Map<number, WriteGate>();
  private readonly handles = new Map<number, number>();
  private readonly jobs = new Map<number, CopyJob>();
  private readonly finishedJobs = new Map<number, CopyProgress>();
  private pending: MetaRecord[] = [];
  private commitTail: Promise<void> = Promise.resolve();
  private commitQueued: Promise<void> | undefined;
  private journalSize = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private failure: SnapblockError | undefined;
  private readonly checkpointBytes: number;
  private fillerRunning = false;
  /** Bytes the filler wrote since it last synced the data file (FILL_SYNC_BYTES). */
  private fillBytesUnsynced = 0;
  private fillPartialsStopped = false;
  private readonly fillPartials: boolean;
  /** The filler's bound on partial chunks: a count (tests) or bytes of memory (the default). */
  private readonly partialPile: number;
  private readonly partialPileBytes: number;
  /** Space accounting of the tables, recomputed when the metadata changed (space-accounting.ts). */
  private account: SpaceAccount | undefined;
  private spaceMemo: SpaceMemo | undefined;
  /** The last accounting done in slices, and the one running. */
  private recentAccount: SpaceAccount | undefined;
  private slicedMemo: SpaceMemo | undefined;
  private accounting: Promise<SpaceAccount> | undefined;
  private slicedAccountingFailed = false;
  /** Chunks each full copy was admitted with, until it ends (held back from new copies). */
  private readonly copyClaims = new Map<number, number>();
  /** Accounting with recovery points as the snapshot groups (pointSpace). */
  private pointAccount: SpaceAccount | undefined;
  /** The sliced pass of pointSpace() running, if any. */
  private pointAccounting: Promise<SpaceAccount> | undefined;
  /**
   * When this process began protecting each volume (open, or setProtection turning it on): the
   * protection lag of a volume without any point yet counts from here.
   */
  private readonly protectedSince = new Map<number, number>();
  /**
   * Points taken but not yet committed, by name: their record's sequence number. Listings leave
   * them out until a commit covers them: a point someone saw listed must survive a crash, and
   * until the journal holds it a kill would lose it (takePoint's caller is told after the commit).
   */
  private readonly uncommittedPoints = new Map<string, number>();
  private readonly openedAtMs = Date.now();
  private pointMemo: SpaceMemo | undefined;
  /** The usage level last reported (POOL_USAGE_LEVELS, 0 below them). */
  private usageLevel = 0;

  private constructor(
    private readonly storage: Storage,
    private readonly sb: Superblock,
    readonly data: StorageFile,
    private journal: StorageFile,
    options: PoolOptions,
    private readonly unlock: () => Promise<void>,
  ) {
    this.chunkSize = sb.chunkSize;
    this.space = new ChunkSpace(sb.capacityChunks);
    this.tables = new ChunkTables(this.space);
    this.meta = new Metadata(this.space, this.tables, sb.chunkSize);
    this.io = new DataPath(this);
    this.filler = new PendingFiller(this);
    this.checkpointBytes = options.checkpointBytes ?? 64 * 1024 * 1024;
    this.fillPartials = options.fillPartials ?? true;
    this.partialPile = options.partialChunkLimit ?? Infinity;
    this.partialPileBytes = options.partialChunkLimit === undefined ? PARTIAL_PILE_BYTES : Infinity;
    this.observer = options.observer ?? {};
    this.space.exhausted = () => {
      this.noteUsage(true);
      // Backing chunks kept for snapshot-held partial chunks can be given back now.
      this.kickFiller();
    };
    const every = options.autoCommitMs ?? 1000;
    if (every > 0) {
      this.autoCommitMs = every;
      this.timer = setInterval(() => this.backgroundCommit(), Math.max(1, every / 2));
      this.timer.unref();
    }
  }

  // ---------------------------------------------------------------- lifecycle

  static async create(options: PoolCreateOptions): Promise<Pool> {
    const storage = await storageOf(options);
    const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
    if (
      !Number.isInteger(chunkSize) ||
      chunkSize < 4096 ||
      chunkSize > 1 << 20 ||
      (chunkSize & (chunkSize - 1)) !== 0
    ) {
      throw new SnapblockError(
        "INVALID_ARGUMENT",
        `chunk size ${chunkSize} must be a power of two from 4096 to 1048576`,
      );
    }
    const capacityChunks = Math.floor(options.sizeBytes / chunkSize);
    if (!Number.isSafeInteger(options.sizeBytes) || capacityChunks < 1 || capacityChunks > 0xfffffffe) {
      throw new SnapblockError(
        "INVALID_ARGUMENT",
        `pool size ${options.sizeBytes} must hold from 1 to 4294967294 chunks of ${chunkSize} bytes`,
      );
    }
    if (await storage.exists(FILES.superblock)) {
      throw new SnapblockError("ALREADY_EXISTS", `a pool already exists at ${storage.location}`);
    }
    const sb = newSuperblock(chunkSize, capacityChunks);
    const data = await storage.open(FILES.data, { create: true, bulk: true });
    try {
      await data.truncate(0);
      await data.sync();
      const empty = new Metadata(
        new ChunkSpace(capacityChunks),
        new ChunkTables(new ChunkSpace(capacityChunks)),
        chunkSize,
      );
      await writeAtomically(storage, FILES.checkpoint, encodeCheckpoint(empty, sb.uuid));
      await writeAtomically(storage, FILES.journal, encodeJournalHeader(sb.uuid, 0));
      // The superblock goes last: its presence means the pool is complete.
      await writeAtomically(storage, FILES.superblock, encodeSuperblock(sb));
    } finally {
      await data.close();
    }
    return Pool.open(options);
  }

  /** Opens a pool, replaying the journal after the last checkpoint (crash recovery). */
  static async open(options: PoolOptions): Promise<Pool> {
    const storage = await storageOf(options);
    if (!(await storage.exists(FILES.superblock))) {
      throw new SnapblockError("NOT_FOUND", `no snapblock pool at ${storage.location} (no superblock)`);
    }
    const unlock = storage.lock ? await storage.lock() : (): Promise<void> => Promise.resolve();
    let pool: Pool;
    try {
      // Every file opened here is closed again when opening fails (a corrupt superblock, a
      // missing journal): a refused pool leaves no descriptor behind.
      const sbFile = await storage.open(FILES.superblock, { create: false });
      let sb: Superblock;
      try {
        sb = decodeSuperblock(await readFully(sbFile, 0, SUPERBLOCK_SIZE), storage.location);
      } finally {
        await sbFile.close();
      }
      const data = await storage.open(FILES.data, { create: true, bulk: true });
      let journal: StorageFile;
      try {
        journal = await storage.open(FILES.journal, { create: false });
      } catch (err) {
        await data.close();
        throw err;
      }
      pool = new Pool(storage, sb, data, journal, options, unlock);
      try {
        await pool.recover();
      } catch (err) {
        pool.stopTimer();
        await data.close();
        await pool.journal.close();
        throw err;
      }
    } catch (err) {
      await unlock();
      throw asSnapblockError(err, `opening pool at ${storage.location}`);
    }
    pool.kickFiller();
    pool.noteUsage();
    if (options.resumeCopies ?? true) {
      for (const d of pool.meta.devices.values()) if (d.copying) pool.startCopy(d);
    }
    return pool;
  }

  /**
   * What the last open found after the checkpoint: journal batches replayed and torn bytes cut.
   * Both 0 after a clean close (which ends with a checkpoint); more means the previous run ended
   * without closing the pool (a crash, a kill), and is logged as such by the process.
   */
  recovery = { replayedBatches: 0, tornBytes: 0 };

  /**
   * Partial chunks loaded from a checkpoint do not say which volume's write made them (the
   * filler's rule needs whether a volume still maps one: worthFilling). One pass over the
   * volumes' tables, only when there are such partial chunks, says it again.
   */
  private findPartialOwners(): void {
    const { partials } = this.space;
    let unknown = 0;
    for (const p of partials.values()) if (!p.owner) unknown++;
    if (unknown === 0) return;
    for (const d of this.meta.volumes.values()) {
      this.tables.forEachMapped(d.table, (chunk, phys) => {
        const p = partials.get(phys);
        if (p && !p.owner) p.owner = { device: d.id, chunk };
      });
    }
    // The rest only snapshots map: no device has id -1.
    for (const p of partials.values()) p.owner ??= { device: -1, chunk: -1 };
  }

  private async recover(): Promise<void> {
    const scan = await this.loadInto(this.meta);
    this.recovery = { replayedBatches: scan.batches.length, tornBytes: scan.tornBytes };
    this.committedSeq = this.meta.seq;
    this.findPartialOwners();
    this.journalSize = scan.validEnd;
    if (scan.batches.length > 0 || scan.tornBytes > 0) {
      // Start clean: a fresh checkpoint, and a journal without the torn tail.
      await this.checkpoint();
    }
  }

  /**
   * Loads the durable metadata into `meta`: the checkpoint, then every journal record after it
   * (recovery at open; check() loads a second copy to compare with memory).
   */
  private async loadInto(meta: Metadata): Promise<JournalScan> {
    const ckFile = await this.storage.open(FILES.checkpoint, { create: false });
    try {
      decodeCheckpoint(await readFully(ckFile, 0, await ckFile.size()), this.sb.uuid, meta);
    } finally {
      await ckFile.close();
    }
    const scan = await scanJournal(this.journal, this.sb.uuid);
    for (const batch of scan.batches) {
      batch.records.forEach((r, i) => {
        const seq = batch.firstSeq + i;
        if (seq > meta.seq) meta.apply(r, seq, true); // records up to meta.seq are in the checkpoint
      });
    }
    meta.space.settleAfterReplay();
    return scan;
  }

  /** Commits everything, writes a checkpoint and closes the files. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.filler.stop();
    for (const job of this.jobs.values()) job.cancel("pool closing");
    this.fillPartialsStopped = true;
    while (this.fillerRunning) await new Promise((resolve) => setTimeout(resolve, 1));
    await Promise.all([...this.jobs.values()].map((j) => j.done));
    this.stopTimer();
    try {
      if (!this.failure) {
        await this.commit();
        // A checkpoint makes the next open fast; the journal alone would do as well.
        await this.enqueueCommit(() => this.checkpoint());
      }
    } catch (err) {
      throw asSnapblockError(err, `closing pool at ${this.storage.location}`);
    } finally {
      this.closed = true;
      await this.data.close();
      await this.journal.close();
      await this.unlock();
    }
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  // ---------------------------------------------------------------- PoolCore

  ensureUsable(): void {
    if (this.failure) throw this.failure;
    if (this.closed) throw new SnapblockError("CLOSED", `pool at ${this.storage.location} is closed`);
  }

  gate(device: Device): WriteGate {
    let g = this.gates.get(device.id);
    if (!g) {
      g = new WriteGate();
      this.gates.set(device.id, g);
    }
    return g;
  }

  alive(device: Device): boolean {
    return this.meta.devices.get(device.id) === device;
  }

  ensureFilled(device: Device, chunks: number[]): Promise<void> {
    return this.filler.ensure(device, chunks);
  }

  /**
   * The partial-chunk filler: completes partial chunks one at a time in the background, yielding
   * to foreground I/O (it waits while reads or writes happened in the last few milliseconds,
   * unless partial chunks pile up). Completing one frees the chunk it was backed by.
   */
  private kickFiller(): void {
    if (this.fillerRunning || !this.fillPartials || this.space.partials.size === 0) return;
    this.fillerRunning = true;
    void this.runFiller().finally(() => {
      this.fillerRunning = false;
    });
  }

  /** Completes every partial chunk now (in the foreground) and commits. */
  async completePartials(): Promise<void> {
    this.ensureUsable();
    for (const phys of [...this.space.partials.keys()]) await this.io.fillPartial(phys);
    await this.commit();
  }

  private async runFiller(): Promise<void> {
    const QUIET_MS = 5;
    while (!this.fillPartialsStopped && !this.failure && this.space.partials.size > 0) {
      if (this.partialLoad() >= 1) {
        await this.trimPartials();
        continue;
      }
      // One scan per pass picks the candidates; each is re-checked when its turn comes.
      const pass = this.partialsWorthFilling();
      if (pass.length === 0) return; // kicked again when a delete frees backing chunks
      for (const chunk of pass) {
        if (this.fillPartialsStopped || this.failure) return;
        if (this.partialLoad() >= 1) break; // trimmed first, then a new pass
        while (performance.now() - this.io.lastForegroundIo < QUIET_MS) {
          await new Promise((resolve) => setTimeout(resolve, QUIET_MS));
        }
        const partial = this.space.partials.get(chunk);
        if (!partial || !this.worthFilling(chunk, partial)) continue;
        if (!(await this.fillOne(chunk))) return;
      }
    }
  }

  /**
   * Partial chunks at the bound (partialLoad, bounded memory): the oldest are completed, without
   * waiting for foreground I/O to pause, until a sixteenth of the bound is free again. Oldest first
   * (the map keeps insertion order), so no scan is needed: a scan of every partial chunk for each
   * one completed, with writes adding one each time, cost milliseconds per write (bench:nbd's
   * first-write rounds past the bound: ~270 writes/s at QD16, 90 % of the server's thread in the
   * scans). The gap keeps the bound from being met again by the very next write.
   */
  private async trimPartials(): Promise<void> {
    for (const chunk of this.space.partials.keys()) {
      if (this.partialLoad() <= 15 / 16 || this.fillPartialsStopped || this.failure) return;
      if (!(await this.fillOne(chunk))) return;
    }
  }

  /** How full the partial chunks' bound is: 1 at the bound (the filler trims), 2 at the hard one. */
  private partialLoad(): number {
    const { space } = this;
    return Math.max(space.partials.size / this.partialPile, space.partialBytes / this.partialPileBytes);
  }

  atPartialCeiling(): boolean {
    return this.partialLoad() >= 2;
  }

  /** Completes one partial chunk; false when the pool failed (the filler stops). */
  private async fillOne(chunk: number): Promise<boolean> {
    try {
      if (await this.io.fillPartial(chunk)) {
        this.fillBytesUnsynced += this.chunkSize;
        if (this.fillBytesUnsynced >= FILL_SYNC_BYTES) {
          this.fillBytesUnsynced = 0;
          await this.data.sync();
        }
      }
      return true;
    } catch (err) {
      // A failed fill leaves the chunk partial, which is a valid state; the pool's own failure
      // handling (a failed commit) reports real trouble to writers.
      if (!this.failure) this.fail(asSnapblockError(err, "background completion of a partial chunk"));
      return false;
    }
  }

  /**
   * Filling costs the copy that the redirect saved, so it is done only where it pays: when no
   * table maps the backing chunk any more (the snapshot that shared it is gone), completing the
   * partial chunks it backs frees it. While a snapshot still holds the backing chunk, filling
   * would free nothing, and the partial chunk stays partial (its reads take two preads).
   *
   * Several partial chunks can read from one backing chunk: a shared partial chunk written again
   * is redirected to a new partial chunk over the same backing, so frequent snapshots (a recovery
   * point every second) leave one per snapshot, each held by that snapshot alone once the volume
   * has moved on. Copying every one of them to free one chunk cost several times the writes
   * themselves (bench:protection: the filler copied 5x what the redirects did). So a partial
   * chunk that only snapshots hold is not filled while others share its backing: it goes when its
   * snapshot is deleted, and the last one left, or one a volume maps, is filled. Where the pool
   * runs short of space (less than LOW_SPACE_SHARE free), all are filled; where partial chunks
   * pile up to PARTIAL_PILE_BYTES (bounded memory), the oldest are (trimPartials).
   */
  private worthFilling(phys: number, partial: PartialChunk): boolean {
    const { space } = this;
    const { backing } = partial;
    if (backing < 0 || space.leafRefCount(backing) !== 0) return false;
    return space.backingRefCount(backing) === 1 || this.shortOfSpace() || this.volumeMaps(phys, partial);
  }

  /**
   * Whether a partial chunk just mapped should wake the filler. Short of space only when it is
   * itself worth filling: waking the filler means one scan of every partial chunk, and a scan per
   * write made each write of a nearly full pool with tens of thousands of partial chunks cost
   * milliseconds (first-write probe: 33-64x the steady write) while finding nothing new (a new
   * partial chunk's backing is usually still mapped by a snapshot). What may have become worth
   * filling otherwise is found by the scans after commits and deletes.
   */
  private newPartialWorthFilling(phys: number): boolean {
    if (this.partialLoad() >= 1) return true;
    if (!this.shortOfSpace()) return false;
    const partial = this.space.partials.get(phys);
    return partial !== undefined && this.worthFilling(phys, partial);
  }

  private shortOfSpace(): boolean {
    return this.space.free < this.space.capacity * LOW_SPACE_SHARE;
  }

  /** Whether the volume whose write made the partial chunk still maps it (unknown: yes). */
  private volumeMaps(phys: number, partial: PartialChunk): boolean {
    const { owner } = partial;
    if (!owner) return true;
    const device = this.meta.devices.get(owner.device);
    return device?.kind === "volume" && this.tables.physical(device.table, owner.chunk) === phys;
  }

  private partialsWorthFilling(): number[] {
    const out: number[] = [];
    for (const [chunk, partial] of this.space.partials)
      if (this.worthFilling(chunk, partial)) out.push(chunk);
    return out;
  }

  record(r: MetaRecord): number {
    const seq = this.meta.seq + 1;
    try {
      this.meta.apply(r, seq, false);
    } catch (err) {
      // Memory and journal would disagree from here on: stop taking writes.
      throw this.fail(asSnapblockError(err, "applying a metadata record"));
    }
    this.pending.push(r);
    if (r.type === RecordType.MapPartial && this.newPartialWorthFilling(r.phys)) this.kickFiller();
    return seq;
  }

  /**
   * Makes every write completed before the call, and every record applied before it, durable:
   * fdatasync of the data area, then the journal batch and its fdatasync. Concurrent callers
   * share a commit that has not started yet.
   */
  commit(): Promise<void> {
    this.ensureUsable();
    this.commitQueued ??= this.enqueueCommit(async () => {
      this.commitQueued = undefined;
      await this.doCommit();
    });
    return this.commitQueued;
  }

  private enqueueCommit(step: () => Promise<void>): Promise<void> {
    // A failed commit has already failed the pool and its own callers; the next step still runs
    // (and will see the failure through ensureUsable).
    const run = this.commitTail.then(step, step);
    this.commitTail = run.catch((err: unknown) => {
      this.fail(asSnapblockError(err, "committing metadata"));
    });
    return run;
  }

  private async doCommit(): Promise<void> {
    this.ensureUsable();
    const started = performance.now();
    this.lastCommitStart = started;
    const records = this.pending;
    const lastSeq = this.meta.seq;
    const firstSeq = lastSeq - records.length + 1;
    this.pending = [];
    try {
      await this.data.sync();
      if (records.length > 0) {
        const batch = encodeBatch(firstSeq, records);
        await this.journal.write([batch], this.journalSize);
        this.journalSize += batch.length;
        await this.journal.sync();
      }
    } catch (err) {
      throw this.fail(asSnapblockError(err, "commit"));
    }
    this.committedSeq = Math.max(this.committedSeq, lastSeq);
    this.space.reclaim(this.committedSeq);
    this.forgetSettled();
    this.observer.committed?.({ records: records.length, seconds: (performance.now() - started) / 1000 });
    this.noteUsage();
    if (this.journalSize > this.checkpointBytes) await this.checkpoint();
  }

  /**
   * Writes the whole state as a new checkpoint and starts an empty journal. Runs inside the
   * commit queue. Records applied but not yet journaled are in the checkpoint; the data they
   * point at is synced before the checkpoint is written.
   */
  private async checkpoint(): Promise<void> {
    const image = encodeCheckpoint(this.meta, this.sb.uuid);
    const seq = this.meta.seq;
    await this.data.sync();
    await writeAtomically(this.storage, FILES.checkpoint, image);
    await writeAtomically(this.storage, FILES.journal, encodeJournalHeader(this.sb.uuid, seq));
    const old = this.journal;
    this.journal = await this.storage.open(FILES.journal, { create: false });
    this.journalSize = JOURNAL_HEADER_SIZE;
    await old.close();
    // Records up to `seq` are in the checkpoint now; later ones stay queued.
    const kept = this.meta.seq - seq;
    this.pending = kept > 0 ? this.pending.slice(this.pending.length - kept) : [];
    this.committedSeq = Math.max(this.committedSeq, seq);
    this.space.reclaim(this.committedSeq);
    this.forgetSettled();
  }

  /** Completed pulls whose completion is durable now: reported complete from here on. */
  private forgetSettled(): void {
    for (const [id, s] of this.meta.settledAt) if (s.seq <= this.committedSeq) this.meta.settledAt.delete(id);
  }

  /**
   * Commits pending records when no commit began in the last autoCommitMs (checked twice a
   * period): records wait at most about 1.5 periods, and a pool already committing often (the
   * point scheduler commits every second) is not made to sync its data file twice as often.
   */
  private backgroundCommit(): void {
    if (this.closed || this.failure || this.pending.length === 0) return;
    if (performance.now() - this.lastCommitStart < this.autoCommitMs) return;
    this.commit().catch((err: unknown) => this.fail(asSnapblockError(err, "background commit")));
  }

  /** Puts the pool in the failed state (every later call gets this error); returns the error. */
  private fail(err: SnapblockError): SnapblockError {
    if (this.failure) return this.failure;
    this.failure = new SnapblockError(
      "IO",
      `pool at ${this.storage.location} failed and must be reopened: ${err.message}`,
      { cause: err },
    );
    this.stopTimer();
    return this.failure;
  }

  // ---------------------------------------------------------------- volumes

  async createVolume(name: string, sizeBytes: number, options: CreateOptions = {}): Promise<VolumeInfo> {
    this.ensureUsable();
    validateName(name, "volume");
    validateSize(sizeBytes, "volume size");
    const annotations = checkAnnotations(options.annotations, `volume '${name}'`);
    this.ensureFree("volume", name);
    const id = this.meta.nextId;
    this.record({
      type: RecordType.Create,
      id,
      kind: 1,
      sourceId: 0,
      sizeBytes,
      createdAtMs: Date.now(),
      name,
    });
    this.recordAnnotations(id, annotations);
    await this.commit();
    return this.getVolume(name);
  }

  getVolume(name: string): VolumeInfo {
    return this.volumeInfo(this.find("volume", name));
  }

  listVolumes(): VolumeInfo[] {
    return [...this.meta.volumes.values()].sort((a, b) => a.id - b.id).map((d) => this.volumeInfo(d));
  }

  async resizeVolume(name: string, sizeBytes: number): Promise<VolumeInfo> {
    this.ensureUsable();
    const d = this.find("volume", name);
    validateSize(sizeBytes, "new volume size");
    if (sizeBytes < d.sizeBytes) {
      throw new SnapblockError(
        "INVALID_ARGUMENT",
        `volume '${name}' is ${d.sizeBytes} bytes and cannot shrink to ${sizeBytes}: volumes only grow`,
      );
    }
    if (sizeBytes > d.sizeBytes) {
      this.record({ type: RecordType.Resize, id: d.id, sizeBytes });
      await this.commit();
    }
    return this.volumeInfo(d);
  }

  async deleteVolume(name: string): Promise<void> {
    this.ensureUsable();
    const d = this.find("volume", name);
    this.ensureNotOpen(d);
    const job = this.jobs.get(d.id);
    if (job) {
      job.cancel("volume deleted");
      await job.done;
    }
    await this.gate(d).exclusive(() => {
      if (!this.alive(d)) return;
      this.ensureNotOpen(d);
      this.record({ type: RecordType.Delete, id: d.id });
      // Its recovery points are its protection history: nothing else would ever thin them.
      // Points exported for reading stay (they are deleted as snapshots once closed), and so do
      // pinned ones: they are a user's snapshots now, and a volume's snapshots outlive it.
      for (const p of this.pointDevices(d.id)) {
        if ((this.handles.get(p.id) ?? 0) > 0 || p.pinned) continue;
        this.record({ type: RecordType.Delete, id: p.id });
        this.gates.delete(p.id);
      }
    });
    this.gates.delete(d.id);
    this.finishedJobs.delete(d.id);
    await this.commit();
    this.kickFiller(); // partial chunks backed by its chunks may now be worth completing
  }

  // ---------------------------------------------------------------- snapshots

  /** Snapshots a volume: copies no data; waits only for writes in flight on the volume. */
  async createSnapshot(
    volumeName: string,
    snapshotName: string,
    options: SnapshotOptions = {},
  ): Promise<SnapshotInfo> {
    this.ensureUsable();
    validateName(snapshotName, "snapshot");
    if (isPointName(snapshotName)) {
      throw new SnapblockError(
        "INVALID_ARGUMENT",
        `snapshot name '${snapshotName}' starts with "rp--", which is reserved for recovery points; choose another name`,
      );
    }
    const vol = this.find("volume", volumeName);
    this.ensureFree("snapshot", snapshotName);
    const annotations = checkAnnotations(options.annotations, `snapshot '${snapshotName}'`);
    // The space limit reads the volume's snapshot space: computed before, in slices if large.
    if (options.limits?.maxSnapshotBytes !== undefined) await this.refreshSpace();
    await this.gate(vol).exclusive(() => {
      if (!this.alive(vol)) throw new SnapblockError("NOT_FOUND", `volume '${volumeName}' was deleted`);
      this.ensureFree("snapshot", snapshotName);
      // Checked in the same synchronous stretch as the record: two snapshots racing for the last
      // place cannot both get it.
      if (options.limits) this.checkSnapshotLimits(vol, options.limits);
      const id = this.meta.nextId;
      this.record({
        type: RecordType.Create,
        id,
        kind: 2,
        sourceId: vol.id,
        sizeBytes: vol.sizeBytes,
        createdAtMs: Date.now(),
        name: snapshotName,
      });
      // The same synchronous stretch, so the same journal batch: no crash can leave the snapshot
      // without its annotations or the reverse.
      this.recordAnnotations(id, annotations);
    });
    await this.commit();
    return this.getSnapshot(snapshotName);
  }

  getSnapshot(name: string): SnapshotInfo {
    const d = this.find("snapshot", name);
    if (!this.listed(d)) throw new SnapblockError("NOT_FOUND", `snapshot '${name}' does not exist yet`);
    return this.snapshotInfo(d);
  }

  /** Whether a listing shows the snapshot: a point only once a commit covers it. */
  private listed(d: Device): boolean {
    const seq = this.uncommittedPoints.get(d.name);
    if (seq === undefined) return true;
    if (seq > this.committedSeq) return false;
    this.uncommittedPoints.delete(d.name);
    return true;
  }

  /**
   * Holds new writes on these volumes, with the writes in flight drained (write-hold.ts), for at
   * most timeoutMs: the first half of a group snapshot whose members are on several pools. ABORTED
   * when the writes in flight do not drain in time (then nothing stays held).
   */
  async holdWrites(volumeNames: readonly string[], o: { timeoutMs: number }): Promise<WriteHold> {
    this.ensureUsable();
    const vols = this.groupVolumes(volumeNames);
    // Gates in volume id order: two holds of overlapping volumes cannot deadlock.
    return WriteHold.acquire(
      [...vols].sort((a, b) => a.id - b.id).map((v) => ({ id: v.id, gate: this.gate(v) })),
      { timeoutMs: o.timeoutMs, what: describeVolumes(vols) },
    );
  }

  /**
   * Snapshots several volumes at one instant: one consistent cut, recorded in ONE journal batch
   * (one commit), so that after a crash either every member exists or none does. New writes to
   * all the volumes are held (in flight ones drained) while the records are made; with `hold`,
   * the caller holds them already (members on several pools) and the snapshots are refused
   * (ABORTED) when that hold no longer stands. Idempotent by name: members that all exist already,
   * each of its volume, are returned as they are; some of them existing is ALREADY_EXISTS.
   */
  async createSnapshots(
    members: readonly { volume: string; snapshot: string; annotations?: StringMap }[],
    options: { hold?: WriteHold } = {},
  ): Promise<SnapshotInfo[]> {
    this.ensureUsable();
    for (const m of members) validateName(m.snapshot, "snapshot");
    const annotations = members.map((m) => checkAnnotations(m.annotations, `snapshot '${m.snapshot}'`));
    const vols = this.groupVolumes(members.map((m) => m.volume));
    const names = new Set(members.map((m) => m.snapshot));
    if (names.size !== members.length) {
      throw new SnapblockError("INVALID_ARGUMENT", "the snapshots of a group need distinct names");
    }
    const existing = members.filter((m) => this.meta.byName("snapshot").has(m.snapshot));
    if (existing.length > 0) {
      const same =
        existing.length === members.length &&
        members.every((m, i) => this.find("snapshot", m.snapshot).sourceId === vols[i]!.id);
      if (same) return members.map((m) => this.getSnapshot(m.snapshot));
      throw new SnapblockError(
        "ALREADY_EXISTS",
        `snapshot(s) ${existing.map((m) => `'${m.snapshot}'`).join(", ")} already exist, not as this group of ${describeVolumes(vols)}`,
      );
    }
    const own = options.hold
      ? undefined
      : await this.holdWrites(
          members.map((m) => m.volume),
          { timeoutMs: Infinity },
        );
    const hold = options.hold ?? own!;
    try {
      // One synchronous stretch: every check and every record together, so that no write, no
      // commit and no other snapshot comes between the members.
      if (!hold.active) {
        throw new SnapblockError(
          "CANCELLED",
          `the hold on writes to ${describeVolumes(vols)} ended (after at most ${hold.timeoutMs} ms) before the snapshots were taken; nothing was taken`,
        );
      }
      for (const v of vols) {
        if (!hold.volumeIds.has(v.id)) {
          throw new SnapblockError(
            "INVALID_ARGUMENT",
            `the hold on writes does not cover volume '${v.name}'`,
          );
        }
        if (!this.alive(v)) throw new SnapblockError("NOT_FOUND", `volume '${v.name}' was deleted`);
      }
      for (const m of members) this.ensureFree("snapshot", m.snapshot);
      const createdAtMs = Date.now();
      members.forEach((m, i) => {
        const vol = vols[i]!;
        const id = this.meta.nextId;
        this.record({
          type: RecordType.Create,
          id,
          kind: 2,
          sourceId: vol.id,
          sizeBytes: vol.sizeBytes,
          createdAtMs,
          name: m.snapshot,
        });
        this.recordAnnotations(id, annotations[i]);
      });
    } finally {
      own?.release();
    }
    await this.commit();
    return members.map((m) => this.getSnapshot(m.snapshot));
  }

  /** The volumes of a group, in the order given: at least one, each once. */
  private groupVolumes(volumeNames: readonly string[]): Device[] {
    if (volumeNames.length === 0) {
      throw new SnapblockError("INVALID_ARGUMENT", "a group snapshot needs at least one volume");
    }
    if (new Set(volumeNames).size !== volumeNames.length) {
      throw new SnapblockError("INVALID_ARGUMENT", "a volume can be in a group snapshot only once");
    }
    return volumeNames.map((n) => this.find("volume", n));
  }

  private checkSnapshotLimits(vol: Device, limits: SnapshotLimits): void {
    const { maxSnapshots, maxSnapshotBytes, names = {} } = limits;
    if (maxSnapshots !== undefined) {
      let count = 0;
      // Recovery points have their own budget (recovery-points.ts) and do not count here.
      for (const d of this.meta.snapshots.values())
        if (d.sourceId === vol.id && !isPointName(d.name)) count++;
      if (count >= maxSnapshots) {
        throw new SnapblockError(
          "NO_SPACE",
          `volume '${vol.name}' has ${count} snapshot(s), its limit of ${maxSnapshots} (${names.maxSnapshots ?? "maximum snapshot count"}); delete one of them before taking another`,
        );
      }
    }
    if (maxSnapshotBytes !== undefined) {
      const held = (this.recentSpaceAccount().snapshotOnly.get(vol.id) ?? 0) * this.chunkSize;
      if (held >= maxSnapshotBytes) {
        throw new SnapblockError(
          "NO_SPACE",
          `the snapshots of volume '${vol.name}' hold ${held} bytes that nothing else uses, at or over its limit of ${maxSnapshotBytes} bytes (${names.maxSnapshotBytes ?? "maximum snapshot space"}); delete snapshots of it before taking another`,
        );
      }
    }
  }

  listSnapshots(volumeName?: string): SnapshotInfo[] {
    return [...this.meta.snapshots.values()]
      .filter((d) => (volumeName === undefined || d.sourceName === volumeName) && this.listed(d))
      .sort((a, b) => a.id - b.id)
      .map((d) => this.snapshotInfo(d));
  }

  /** Deletes a snapshot whatever depends on it: shared chunks stay while anyone maps them. */
  async deleteSnapshot(name: string): Promise<void> {
    this.ensureUsable();
    const d = this.find("snapshot", name);
    this.ensureNotOpen(d);
    this.record({ type: RecordType.Delete, id: d.id });
    this.gates.delete(d.id);
    await this.commit();
    this.kickFiller(); // partial chunks backed by its chunks may now be worth completing
  }

  // ---------------------------------------------------------------- recovery points

  /**
   * Sets a volume's protection policy (protection-policy.ts; "off" or "" turns it off). Stored
   * in the pool's metadata with the volume; the points it already has stay until thinned.
   */
  async setProtection(volumeName: string, policy: string): Promise<VolumeInfo> {
    this.ensureUsable();
    const d = this.find("volume", volumeName);
    const text = parseProtectionPolicy(policy)?.text ?? "";
    if ((d.protection ?? "") !== text) {
      if (d.protection === undefined) this.protectedSince.set(d.id, Date.now());
      this.record({ type: RecordType.Protect, id: d.id, policy: text });
      await this.commit();
    }
    return this.volumeInfo(d);
  }

  /**
   * Takes a recovery point of a volume, stamped `atMs`, unless nothing was written to it since
   * its newest point: then undefined. "Written" is read from the chunk tables: after a point
   * every chunk of the volume is shared with it, so any write, trim or zeroing of data remaps a
   * chunk (redirect-on-write), and a volume whose table still equals its newest point's holds
   * the same content. Like createSnapshot, it waits only for writes in flight on the volume.
   */
  async takePoint(volumeName: string, atMs: number): Promise<SnapshotInfo | undefined> {
    const name = await this.recordPoint(volumeName, atMs);
    if (name === undefined) return undefined;
    await this.commit();
    return this.getSnapshot(name);
  }

  /**
   * takePoint without the commit: the point is recorded, listed once a commit covers it (the
   * caller's, or any later one). The point scheduler records the points of all its volumes and
   * commits once; it records the next second's while a slow commit still runs. Returns the
   * point's name, or undefined when nothing was written since the newest point.
   */
  async recordPoint(volumeName: string, atMs: number): Promise<string | undefined> {
    this.ensureUsable();
    const vol = this.find("volume", volumeName);
    let taken: string | undefined;
    await this.gate(vol).exclusive(() => {
      if (!this.alive(vol)) throw new SnapblockError("NOT_FOUND", `volume '${volumeName}' was deleted`);
      const points = this.pointDevices(vol.id);
      const newest = points[points.length - 1];
      if (newest && newest.sizeBytes === vol.sizeBytes && !this.tables.differs(vol.table, newest.table))
        return;
      // Stamps only grow: a clock that stepped back cannot put a point before an older one.
      const stamp = Math.max(Math.floor(atMs), newest ? newest.createdAtMs + 1 : 0);
      const name = pointName(vol.id, stamp);
      const seq = this.record({
        type: RecordType.Create,
        id: this.meta.nextId,
        kind: 2,
        sourceId: vol.id,
        sizeBytes: vol.sizeBytes,
        createdAtMs: stamp,
        name,
      });
      this.uncommittedPoints.set(name, seq);
      taken = name;
    });
    return taken;
  }

  /** When the volume's newest recovery point was taken (ms), committed or not; undefined: none. */
  newestPointMs(volumeName: string): number | undefined {
    const points = this.pointDevices(this.find("volume", volumeName).id);
    return points[points.length - 1]?.createdAtMs;
  }

  /** A volume's recovery points, oldest first (those committed: see uncommittedPoints). */
  listPoints(volumeName: string): SnapshotInfo[] {
    const vol = this.find("volume", volumeName);
    return this.pointDevices(vol.id)
      .filter((d) => this.listed(d))
      .map((d) => this.snapshotInfo(d));
  }

  /** The newest point of a volume taken at or before `atMs`; NOT_FOUND when there is none. */
  pointAt(volumeName: string, atMs: number): SnapshotInfo {
    const points = this.listPoints(volumeName);
    let found: SnapshotInfo | undefined;
    for (const p of points) if (p.createdAt.getTime() <= atMs) found = p;
    if (!found) {
      const oldest = points[0];
      throw new SnapblockError(
        "NOT_FOUND",
        `volume '${volumeName}' has no recovery point at or before ${new Date(atMs).toISOString()}${oldest ? `; its oldest is ${oldest.createdAt.toISOString()}` : " (it has none)"}`,
      );
    }
    return found;
  }

  /**
   * Pins a recovery point (`pinned` true) or releases it; durable when it returns, idempotent.
   * A pinned point is a user's snapshot (exported to Kubernetes as a VolumeSnapshot): thinning,
   * the space rule (deletePoints) and deleting its volume leave it; deleteSnapshot deletes it.
   * NOT_FOUND when there is no such point (thinned already), INVALID_ARGUMENT for a snapshot that
   * is not a point (nothing thins those).
   */
  async pinPoint(name: string, pinned: boolean): Promise<SnapshotInfo> {
    this.ensureUsable();
    const d = this.find("snapshot", name);
    if (!this.listed(d)) throw new SnapblockError("NOT_FOUND", `recovery point '${name}' does not exist yet`);
    if (!isPointName(name)) {
      throw new SnapblockError(
        "INVALID_ARGUMENT",
        `snapshot '${name}' is not a recovery point: only points are thinned, a snapshot stays until deleted`,
      );
    }
    if ((d.pinned ?? false) !== pinned) {
      this.record({ type: RecordType.Pin, id: d.id, pinned });
      await this.commit();
    }
    return this.snapshotInfo(d);
  }

  /**
   * Deletes recovery points (metadata only) in one commit: what thinning and the space rule do.
   * Points that are pinned, open (exported) or already gone are skipped; returns the names deleted.
   */
  async deletePoints(names: string[]): Promise<string[]> {
    const { deleted } = this.dropPoints(names);
    if (deleted.length > 0) await this.commit();
    return deleted;
  }

  /**
   * deletePoints without waiting for a commit: the points are gone from listings at once and
   * the deletion is durable with the next commit, whoever asks for it (the point scheduler lets
   * the next point's commit carry its thinning: one data sync a tick instead of two). Their
   * chunks are free once that commit is made, as for every release; a crash before it brings
   * the points back, to be deleted again. `seq`: the last record written (0 if none), durable
   * when `committedSeq` reaches it.
   */
  dropPoints(names: string[]): { deleted: string[]; seq: number } {
    this.ensureUsable();
    const deleted: string[] = [];
    let seq = 0;
    for (const name of names) {
      const d = this.meta.snapshots.get(name);
      if (!d || !isPointName(name) || d.pinned || (this.handles.get(d.id) ?? 0) > 0) continue;
      seq = this.record({ type: RecordType.Delete, id: d.id });
      this.gates.delete(d.id);
      deleted.push(name);
    }
    if (deleted.length > 0) this.kickFiller();
    return { deleted, seq };
  }

  /**
   * Who holds the recovery points' space: `byVolume`, bytes held only by each volume's unpinned
   * recovery points (one or several of them), by volume name: what deleting all the points the
   * space rule may delete would give back; `exclusive`, per unpinned point, the bytes only it maps:
   * what deleting that one point (and no other) gives back. Pinned points count as user snapshots
   * (a chunk they share with unpinned points is not given back by those).
   *
   * A full accounting pass (space-accounting.ts) with the points as the snapshot groups, cached
   * until the metadata changes. Large tables are accounted in slices that let I/O run between
   * them (a pass over a 2 GiB volume of 4 KiB chunks with a dozen points took 165-560 ms, all of
   * it a stall of every export of the pool when done at once); such a result is exact for the
   * tables as each of their leaves was when visited. Concurrent callers share one pass.
   */
  pointSpace(): Promise<PointSpace> {
    const account = this.pointAccount;
    if (account?.seq === this.meta.seq) return Promise.resolve(this.pointSpaceOf(account));
    const groupOf: SnapshotGroupOf = (d) =>
      d.kind === "snapshot" && isPointName(d.name) && !d.pinned ? d.sourceId : undefined;
    const memo = (this.pointMemo ??= new SpaceMemo());
    if (this.tables.memoryBytes <= SYNC_ACCOUNTING_BYTES) {
      if (this.pointAccounting === undefined) {
        this.pointAccount = accountSpace(this.meta, this.space, { groupOf, memo });
        return Promise.resolve(this.pointSpaceOf(this.pointAccount));
      }
    }
    // One pass at a time: the memo's scratch arrays belong to the pass that runs.
    this.pointAccounting ??= accountSpaceSliced(this.meta, this.space, { groupOf, memo }).finally(() => {
      this.pointAccounting = undefined;
    });
    return this.pointAccounting.then((a) => {
      this.pointAccount = a;
      return this.pointSpaceOf(a);
    });
  }

  private pointSpaceOf(account: SpaceAccount): PointSpace {
    const byVolume = new Map<string, number>();
    for (const vol of this.meta.volumes.values())
      byVolume.set(vol.name, (account.snapshotOnly.get(vol.id) ?? 0) * this.chunkSize);
    const exclusive = new Map<string, number>();
    for (const snap of this.meta.snapshots.values()) {
      if (!isPointName(snap.name) || snap.pinned) continue;
      exclusive.set(snap.name, (account.devices.get(snap.id)?.exclusive ?? 0) * this.chunkSize);
    }
    return { byVolume, exclusive };
  }

  /** Volumes with a protection policy, and the policy. */
  protectedVolumes(): { name: string; policy: string }[] {
    const out: { name: string; policy: string }[] = [];
    for (const d of this.meta.volumes.values())
      if (d.protection !== undefined) out.push({ name: d.name, policy: d.protection });
    return out;
  }

  /**
   * Seconds the newest content of a protected volume has had no recovery point (docs/metrics.md):
   * 0 while nothing was written since its newest point (the same test as takePoint's); else the
   * age of its newest point, or without any point, the time since this process began protecting
   * it. Cheap: a table comparison stops at the first difference and skips shared subtrees.
   */
  private protectionLag(vol: Device, nowMs: number): number {
    // A point counts once durable: one still waiting for its commit (the scheduler does not wait
    // for it, and a commit can take seconds under a write load) restores nothing after a crash.
    const points = this.pointDevices(vol.id).filter((d) => this.listed(d));
    const newest = points[points.length - 1];
    if (newest && newest.sizeBytes === vol.sizeBytes && !this.tables.differs(vol.table, newest.table))
      return 0;
    const from = newest?.createdAtMs ?? this.protectedSince.get(vol.id) ?? this.openedAtMs;
    return Math.max(0, (nowMs - from) / 1000);
  }

  /** The recovery points of volume `volumeId`, oldest first. */
  private pointDevices(volumeId: number): Device[] {
    const out: Device[] = [];
    for (const d of this.meta.snapshots.values())
      if (d.sourceId === volumeId && isPointName(d.name)) out.push(d);
    return out.sort((a, b) => a.createdAtMs - b.createdAtMs || a.id - b.id);
  }

  // ---------------------------------------------------------------- annotations and notes

  /** Whether a volume or snapshot of that name exists. */
  has(kind: "volume" | "snapshot", name: string): boolean {
    return this.meta.byName(kind).has(name);
  }

  /** A device's annotations (a copy; empty when it has none). NOT_FOUND for an unknown device. */
  annotations(kind: "volume" | "snapshot", name: string): Record<string, string> {
    return { ...this.find(kind, name).annotations };
  }

  /** Replaces a device's annotations; durable when it returns. */
  async annotate(kind: "volume" | "snapshot", name: string, annotations: StringMap): Promise<void> {
    await this.annotateAll({ devices: [{ kind, name, annotations }] });
  }

  /** The entries of note table `table` (copies), by name. */
  notes(table: number): Map<string, Record<string, string>> {
    const out = new Map<string, Record<string, string>>();
    for (const [name, map] of this.meta.notes.get(table) ?? []) out.set(name, { ...map });
    return out;
  }

  /**
   * Applies annotation and note changes in one commit: after a crash all of them hold or none.
   * Devices are found first (NOT_FOUND before anything is recorded); unchanged entries record
   * nothing, and nothing to record costs no commit.
   */
  async annotateAll(changes: AnnotationChanges): Promise<void> {
    this.ensureUsable();
    const devices = (changes.devices ?? []).map((c) => ({
      device: this.find(c.kind, c.name),
      map: checkAnnotations(c.annotations, `${c.kind} '${c.name}'`) ?? {},
    }));
    const notes = (changes.notes ?? []).map((n) => {
      if (!Number.isInteger(n.table) || n.table < 1 || n.table > 0xffffffff) {
        throw new SnapblockError("INVALID_ARGUMENT", `note table ${n.table} must be a whole number from 1`);
      }
      if (typeof n.name !== "string" || Buffer.byteLength(n.name, "utf8") > 0xffff) {
        throw new SnapblockError("INVALID_ARGUMENT", "a note name is a string of at most 65,535 bytes");
      }
      return { ...n, map: n.map === undefined ? undefined : validateStringMap(n.map, `note '${n.name}'`) };
    });
    let recorded = false;
    for (const { device, map } of devices) {
      if (!this.alive(device) || sameMap(device.annotations ?? {}, map)) continue;
      this.record({ type: RecordType.Annotate, id: device.id, map: { ...map } });
      recorded = true;
    }
    for (const n of notes) {
      const had = this.meta.notes.get(n.table)?.get(n.name);
      if (n.map === undefined ? had === undefined : had !== undefined && sameMap(had, n.map)) continue;
      this.record({ type: RecordType.Note, id: n.table, name: n.name, map: n.map && { ...n.map } });
      recorded = true;
    }
    if (recorded) await this.commit();
  }

  private recordAnnotations(id: number, annotations: StringMap | undefined): void {
    if (annotations && Object.keys(annotations).length > 0) {
      this.record({ type: RecordType.Annotate, id, map: { ...annotations } });
    }
  }

  // ---------------------------------------------------------------- restore and clone

  /** A new volume with the snapshot's content, sharing its chunks; ready at once. */
  async restoreSnapshot(
    snapshotName: string,
    volumeName: string,
    options: RestoreOptions = {},
  ): Promise<VolumeInfo> {
    this.ensureUsable();
    const snap = this.find("snapshot", snapshotName);
    return this.derive(snap, volumeName, options);
  }

  /** A new volume with the volume's current content, sharing its chunks; ready at once. */
  async cloneVolume(
    sourceName: string,
    volumeName: string,
    options: RestoreOptions = {},
  ): Promise<VolumeInfo> {
    this.ensureUsable();
    const src = this.find("volume", sourceName);
    return this.derive(src, volumeName, options);
  }

  private async derive(src: Device, volumeName: string, options: RestoreOptions): Promise<VolumeInfo> {
    validateName(volumeName, "volume");
    const sizeBytes = options.sizeBytes ?? src.sizeBytes;
    validateSize(sizeBytes, "volume size");
    if (sizeBytes < src.sizeBytes) {
      throw new SnapblockError(
        "OUT_OF_RANGE",
        `volume size ${sizeBytes} is smaller than its source '${src.name}' (${src.sizeBytes} bytes)`,
      );
    }
    this.ensureFree("volume", volumeName);
    const annotations = checkAnnotations(options.annotations, `volume '${volumeName}'`);
    let created: Device | undefined;
    await this.gate(src).exclusive(() => {
      if (!this.alive(src)) throw new SnapblockError("NOT_FOUND", `${src.kind} '${src.name}' was deleted`);
      this.ensureFree("volume", volumeName);
      // A full copy takes a new chunk for every chunk the source maps: refuse it now rather than
      // fail it half way (the space is held back for it until it ends).
      const claim = options.fullCopy ? this.admitCopy(src) : 0;
      const id = this.meta.nextId;
      this.record({
        type: RecordType.Create,
        id,
        kind: 1,
        sourceId: src.id,
        sizeBytes,
        createdAtMs: Date.now(),
        name: volumeName,
      });
      this.recordAnnotations(id, annotations);
      if (options.fullCopy) {
        this.record({ type: RecordType.CopyState, id, copying: true });
        this.copyClaims.set(id, claim);
      }
      created = this.meta.devices.get(id);
    });
    await this.commit();
    if (created?.copying) this.startCopy(created);
    return this.getVolume(volumeName);
  }

  /**
   * Admission of a full copy of `src`: the chunks it will need, or NO_SPACE when the pool's free
   * chunks (less those held back for copies already running) cannot hold them.
   */
  private admitCopy(src: Device): number {
    let needed = 0;
    this.tables.forEachMapped(src.table, () => needed++);
    const held = this.copyReservedChunks();
    const free = this.space.free - held;
    if (needed > free) {
      const cs = this.chunkSize;
      throw new SnapblockError(
        "NO_SPACE",
        `a full copy of ${src.kind} '${src.name}' needs ${needed * cs} bytes but the pool has ${Math.max(0, free) * cs} free${held > 0 ? ` (${held * cs} more are held for copies running)` : ""}; free space, or restore without a full copy (it shares chunks and needs none)`,
      );
    }
    return needed;
  }

  /** Chunks the running full copies may still take. */
  private copyReservedChunks(): number {
    let held = 0;
    for (const [id, claim] of this.copyClaims) {
      const copied = this.jobs.get(id)?.progress().copiedChunks ?? 0;
      held += Math.max(0, claim - copied);
    }
    return held;
  }

  private startCopy(d: Device): void {
    if (!this.copyClaims.has(d.id)) {
      // Resumed at open: what is still shared is what it may take.
      let shared = 0;
      this.tables.forEachMapped(d.table, (_c, _p, exclusive) => {
        if (!exclusive) shared++;
      });
      this.copyClaims.set(d.id, shared);
    }
    const job = new CopyJob(this, this.io, d);
    this.jobs.set(d.id, job);
    this.finishedJobs.delete(d.id);
    void job.done.then(() => {
      this.jobs.delete(d.id);
      this.copyClaims.delete(d.id);
      if (this.alive(d)) this.finishedJobs.set(d.id, job.progress());
    });
  }

  /** Progress of the full background copy of a volume, if one ran or runs. */
  copyProgress(volumeName: string): CopyProgress | undefined {
    const d = this.find("volume", volumeName);
    return this.jobs.get(d.id)?.progress() ?? this.finishedJobs.get(d.id);
  }

  /** Stops a background copy; the volume stays valid, still sharing the chunks not yet copied. */
  async cancelCopy(volumeName: string): Promise<CopyProgress | undefined> {
    const d = this.find("volume", volumeName);
    const job = this.jobs.get(d.id);
    if (!job) return this.finishedJobs.get(d.id);
    job.cancel("cancelled by request");
    await job.done;
    return job.progress();
  }

  /** Resolves when the volume's background copy (if any) ends. */
  async waitForCopy(volumeName: string): Promise<CopyProgress | undefined> {
    const d = this.find("volume", volumeName);
    const job = this.jobs.get(d.id);
    if (job) await job.done;
    return this.copyProgress(volumeName);
  }

  // ---------------------------------------------------------------- content from elsewhere

  /**
   * A volume or snapshot whose content is on another node: `ranges` are its allocated chunks
   * there (or, with `base`, the chunks that differ from `base`, a local device it starts as a
   * copy of). Ready at once: reads of a chunk not here yet fetch it from `source` first (through
   * the fetcher set with setChunkFetcher) and the background pull brings the rest. Only the
   * listed chunks ever travel; the others are holes (or `base`'s content).
   */
  async createFromSource(options: {
    kind: "volume" | "snapshot";
    name: string;
    sizeBytes: number;
    source: string;
    ranges: [number, number][];
    base?: { kind: "volume" | "snapshot"; name: string };
    annotations?: StringMap;
  }): Promise<VolumeInfo | SnapshotInfo> {
    this.ensureUsable();
    const { kind, name, sizeBytes, source } = options;
    validateName(name, kind);
    validateSize(sizeBytes, `${kind} size`);
    if (source === "")
      throw new SnapblockError("INVALID_ARGUMENT", "the source of pending content is required");
    const annotations = checkAnnotations(options.annotations, `${kind} '${name}'`);
    this.ensureFree(kind, name);
    const base = options.base ? this.find(options.base.kind, options.base.name) : undefined;
    if (base?.pending) {
      throw new SnapblockError(
        "BUSY",
        `${base.kind} '${base.name}' is itself still filling from ${base.pending.source}; wait for it to complete`,
      );
    }
    if (base && base.sizeBytes > sizeBytes) {
      throw new SnapblockError(
        "OUT_OF_RANGE",
        `${kind} size ${sizeBytes} is smaller than its base '${base.name}'`,
      );
    }
    const chunks = this.meta.chunksFor(sizeBytes);
    let total = 0;
    for (const [first, count] of options.ranges) {
      if (
        !Number.isInteger(first) ||
        !Number.isInteger(count) ||
        first < 0 ||
        count < 1 ||
        first + count > chunks
      ) {
        throw new SnapblockError(
          "INVALID_ARGUMENT",
          `pending range [${first}, +${count}) is outside ${chunks} chunks`,
        );
      }
      total += count;
    }
    const create = (): void => {
      this.ensureFree(kind, name);
      const id = this.meta.nextId;
      this.record({
        type: RecordType.Create,
        id,
        kind: kind === "volume" ? 1 : 2,
        sourceId: base?.id ?? 0,
        sizeBytes,
        createdAtMs: Date.now(),
        name,
      });
      this.recordAnnotations(id, annotations);
      // Large lists go in several records (a record's run count is a u32, a batch stays small).
      const RUNS = 8192;
      for (let i = 0; i < options.ranges.length || i === 0; i += RUNS) {
        this.record({
          type: RecordType.Pending,
          id,
          source,
          total,
          ranges: options.ranges.slice(i, i + RUNS),
        });
      }
    };
    if (base) {
      await this.gate(base).exclusive(() => {
        if (!this.alive(base))
          throw new SnapblockError("NOT_FOUND", `${base.kind} '${base.name}' was deleted`);
        create();
      });
    } else create();
    await this.commit();
    return kind === "volume" ? this.getVolume(name) : this.getSnapshot(name);
  }

  /**
   * Where the pending chunks of `source` come from. Starts (or resumes, after a restart) the
   * background pull of that source; replacing the fetcher (another holder) carries on from it.
   */
  setChunkFetcher(source: string, fetcher: ChunkFetcher, options: PullOptions = {}): void {
    this.ensureUsable();
    this.filler.setFetcher(source, fetcher, options);
  }

  /** Every source some device is still waiting for, with its devices (resolve them after open). */
  pendingSources(): {
    source: string;
    devices: { kind: "volume" | "snapshot"; name: string }[];
    hasFetcher: boolean;
  }[] {
    const unresolved = new Set(this.filler.sourcesWithoutFetcher());
    return [...this.meta.pendingBySource].map(([source, devices]) => ({
      source,
      devices: [...devices].map((d) => ({ kind: d.kind, name: d.name })),
      hasFetcher: !unresolved.has(source),
    }));
  }

  /** The background pull of a source: state, what is left, rate. */
  pullProgress(source: string): PullProgress | undefined {
    return this.filler.progress(source);
  }

  // ---------------------------------------------------------------- I/O handles

  /** A read-write handle on a volume. Close it when done: an open volume cannot be deleted. */
  openVolume(name: string): BlockDevice & { close(): void } {
    this.ensureUsable();
    return this.openHandle(this.find("volume", name));
  }

  /** A read-only handle on a snapshot. */
  openSnapshot(name: string): BlockDevice & { close(): void } {
    this.ensureUsable();
    return this.openHandle(this.find("snapshot", name));
  }

  private openHandle(d: Device): DeviceHandle {
    this.handles.set(d.id, (this.handles.get(d.id) ?? 0) + 1);
    return new DeviceHandle(d, this.io, this, () => {
      const n = (this.handles.get(d.id) ?? 1) - 1;
      if (n === 0) this.handles.delete(d.id);
      else this.handles.set(d.id, n);
    });
  }

  // ---------------------------------------------------------------- differences

  /** Logical chunks that hold data in a snapshot (or volume). */
  allocatedChunks(kind: "volume" | "snapshot", name: string): ChunkList {
    const d = this.find(kind, name);
    const chunks: number[] = [];
    this.tables.forEachMapped(d.table, (c) => chunks.push(c));
    return { chunkSize: this.chunkSize, chunks };
  }

  /**
   * Logical chunks whose content may differ between two snapshots of the same lineage: those
   * whose mapping differs. Computed from the tables alone; shared subtrees are skipped.
   */
  changedChunks(fromSnapshot: string, toSnapshot: string): ChunkList {
    const a = this.find("snapshot", fromSnapshot);
    const b = this.find("snapshot", toSnapshot);
    if (a.lineage !== b.lineage) {
      throw new SnapblockError(
        "INVALID_ARGUMENT",
        `snapshots '${fromSnapshot}' and '${toSnapshot}' do not descend from the same volume; compare allocated chunks instead`,
      );
    }
    const chunks: number[] = [];
    this.tables.diff(a.table, b.table, (c) => chunks.push(c));
    return { chunkSize: this.chunkSize, chunks };
  }

  /**
   * The allocated byte ranges of a snapshot from byte `from` on, page by page (changed-block
   * tracking: block-ranges.ts has the granularity). NOT_FOUND for an unknown snapshot,
   * OUT_OF_RANGE for `from` outside [0, size].
   */
  allocatedRanges(snapshotName: string, from: number): BlockRangeCursor {
    this.ensureUsable();
    return new BlockRangeCursor(this, this.find("snapshot", snapshotName), undefined, from);
  }

  /**
   * The byte ranges from `from` on where snapshot `targetName` may differ from `baseName` (an
   * earlier snapshot of the same volume), page by page; every byte that differs is in them.
   */
  changedRanges(baseName: string, targetName: string, from: number): BlockRangeCursor {
    this.ensureUsable();
    const base = this.find("snapshot", baseName);
    const target = this.find("snapshot", targetName);
    if (base.lineage !== target.lineage) {
      throw new SnapblockError(
        "INVALID_ARGUMENT",
        `snapshots '${baseName}' and '${targetName}' are not of the same volume; ask for the allocated ranges of '${targetName}' instead`,
      );
    }
    return new BlockRangeCursor(this, target, base, from);
  }

  // ---------------------------------------------------------------- stats and check

  /**
   * Who holds the pool's space, from the tables (space-accounting.ts). Computed on demand and
   * cached until the metadata changes: every change of a mapping is a record, so the record
   * sequence number tells whether the figures are still true. In-place writes change no mapping.
   */
  spaceAccount(): SpaceAccount {
    if (this.account?.seq !== this.meta.seq)
      this.account = accountSpace(this.meta, this.space, { memo: (this.spaceMemo ??= new SpaceMemo()) });
    return this.account;
  }

  /**
   * Figures for readers that must not stall I/O (metrics, the operator's views, limit checks):
   * exact and at once while the tables are small; for large tables the last figures computed in
   * slices, and a new sliced computation when the metadata changed since (the figures follow one
   * computation behind). The first time, with nothing computed yet, it computes at once.
   */
  recentSpaceAccount(): SpaceAccount {
    if (this.account?.seq === this.meta.seq) return this.account;
    if (this.tables.memoryBytes <= SYNC_ACCOUNTING_BYTES || this.slicedAccountingFailed)
      return this.spaceAccount();
    const recent = this.latestAccount();
    if (!recent) return this.spaceAccount();
    if (recent.seq !== this.meta.seq) {
      // Served next time. A failure (a bug) makes the next call compute at once, which throws it
      // to that caller instead of losing it here.
      void this.refreshSpace().catch(() => (this.slicedAccountingFailed = true));
    }
    return recent;
  }

  /** The newer of the last exact and the last sliced result. */
  private latestAccount(): SpaceAccount | undefined {
    const a = this.account;
    const b = this.recentAccount;
    return !a ? b : !b ? a : a.seq >= b.seq ? a : b;
  }

  /** Accounts the space now, in slices for large tables; resolves with the result. */
  refreshSpace(): Promise<SpaceAccount> {
    if (this.tables.memoryBytes <= SYNC_ACCOUNTING_BYTES) return Promise.resolve(this.spaceAccount());
    const latest = this.latestAccount();
    if (latest?.seq === this.meta.seq) return Promise.resolve(latest);
    this.accounting ??= accountSpaceSliced(this.meta, this.space, {
      memo: (this.slicedMemo ??= new SpaceMemo()),
    }).then(
      (account) => {
        this.accounting = undefined;
        this.recentAccount = account;
        return account;
      },
      (err: unknown) => {
        this.accounting = undefined;
        throw asSnapblockError(err, "accounting the pool's space");
      },
    );
    return this.accounting;
  }

  /**
   * The pool's use without the per-device accounting: cheap, exact, for capacity checks and for
   * watchers that sample often (stats() accounts every table, which with many snapshots of large
   * tables is far from free).
   */
  usage(): Pick<
    PoolStats,
    "sizeBytes" | "allocatedBytes" | "freeBytes" | "provisionedBytes" | "copyReservedBytes" | "metadataBytes"
  > {
    const cs = this.chunkSize;
    let provisionedBytes = 0;
    for (const d of this.meta.volumes.values()) provisionedBytes += d.sizeBytes;
    return {
      sizeBytes: this.space.capacity * cs,
      allocatedBytes: this.space.inUse * cs,
      freeBytes: this.space.free * cs,
      provisionedBytes,
      copyReservedBytes: this.copyReservedChunks() * cs,
      metadataBytes: this.tables.memoryBytes + this.space.memoryBytes,
    };
  }

  /**
   * The pool's statistics. `recent`: with the space figures of recentSpaceAccount() (never a long
   * pause, possibly one computation behind) instead of exact ones computed now.
   */
  stats(options: { recent?: boolean } = {}): PoolStats {
    const account = options.recent ? this.recentSpaceAccount() : this.spaceAccount();
    const cs = this.chunkSize;
    const usage = (d: Device): SpaceUsage => {
      const a = account.devices.get(d.id) ?? { mapped: 0, exclusive: 0 };
      return {
        totalBytes: a.mapped * cs,
        exclusiveBytes: a.exclusive * cs,
        sharedBytes: (a.mapped - a.exclusive) * cs,
      };
    };
    const snapshotCounts = new Map<number, number>();
    const pointCounts = new Map<number, number>();
    for (const d of this.meta.snapshots.values()) {
      if (!this.listed(d)) continue; // a point counts once durable (listPoints)
      snapshotCounts.set(d.sourceId, (snapshotCounts.get(d.sourceId) ?? 0) + 1);
      if (isPointName(d.name)) pointCounts.set(d.sourceId, (pointCounts.get(d.sourceId) ?? 0) + 1);
    }
    const volumes = [...this.meta.volumes.values()].sort((a, b) => a.id - b.id);
    const snapshots = [...this.meta.snapshots.values()].sort((a, b) => a.id - b.id);
    const nowMs = Date.now();
    return {
      chunkSize: cs,
      ...this.usage(),
      reclaimableBytes: account.reclaimableChunks * cs,
      volumes: volumes.map((d) => ({
        name: d.name,
        sizeBytes: d.sizeBytes,
        ...usage(d),
        snapshotOnlyBytes: (account.snapshotOnly.get(d.id) ?? 0) * cs,
        snapshotCount: snapshotCounts.get(d.id) ?? 0,
        pointCount: pointCounts.get(d.id) ?? 0,
        ...(d.protection !== undefined
          ? { protection: d.protection, protectionLagSeconds: this.protectionLag(d, nowMs) }
          : {}),
      })),
      snapshots: snapshots.map((d) => ({
        name: d.name,
        sizeBytes: d.sizeBytes,
        sourceVolume: d.sourceName ?? "",
        ...usage(d),
      })),
      sharedChunks: account.sharedChunks,
      exclusiveChunks: account.exclusiveChunks,
      partialChunks: this.space.partials.size,
      copies: [...this.meta.volumes.values()].flatMap((d) => {
        const p = this.jobs.get(d.id)?.progress() ?? this.finishedJobs.get(d.id);
        return p ? [{ volume: d.name, ...p }] : [];
      }),
      ...(this.lastCheck ? { lastCheck: this.lastCheck } : {}),
    };
  }

  /**
   * Reports a crossing of a usage level (80/90/100 %) to the observer, up at once and down only
   * USAGE_HYSTERESIS points below the level; `full`: a write was just refused for lack of space.
   */
  private noteUsage(full = false): void {
    // Short of space (after every commit): partial chunks worth completing only then may wait.
    if (this.shortOfSpace()) this.kickFiller();
    const used = this.space.inUse;
    const percent = (used / this.space.capacity) * 100;
    let level = 0;
    for (const l of POOL_USAGE_LEVELS) if (percent >= l) level = l;
    if (full) level = 100;
    const previous = this.usageLevel;
    if (level === previous) return;
    if (level < previous && percent > previous - USAGE_HYSTERESIS) return;
    this.usageLevel = level;
    this.observer.usageLevel?.({
      level,
      previous,
      usedBytes: used * this.chunkSize,
      sizeBytes: this.space.capacity * this.chunkSize,
      full,
    });
  }

  /**
   * Full consistency check: recounts every reference from the tables and compares with the
   * stored counts and the free lists; then (after a commit) reloads the durable metadata and
   * compares it with memory, mapping by mapping.
   */
  async check(): Promise<CheckReport> {
    this.ensureUsable();
    await this.commit();
    const report = checkConsistency(this.meta, this.space, this.tables, this.committedSeq);
    if (this.pending.length === 0) {
      const durable = await this.loadDurable();
      for (const problem of compareMetadata(this.meta, durable)) report.problems.push(problem);
    }
    report.ok = report.problems.length === 0;
    this.lastCheck = { at: new Date(), ok: report.ok, problems: report.problems.length };
    return report;
  }

  private async loadDurable(): Promise<Metadata> {
    const space = new ChunkSpace(this.sb.capacityChunks);
    const meta = new Metadata(space, new ChunkTables(space), this.chunkSize);
    await this.loadInto(meta);
    return meta;
  }

  // ---------------------------------------------------------------- helpers

  private find(kind: "volume" | "snapshot", name: string): Device {
    if (typeof name !== "string" || name.length === 0) {
      throw new SnapblockError("INVALID_ARGUMENT", `${kind} name is required`);
    }
    const d = this.meta.byName(kind).get(name);
    if (!d) throw new SnapblockError("NOT_FOUND", `${kind} '${name}' does not exist`);
    return d;
  }

  private ensureFree(kind: "volume" | "snapshot", name: string): void {
    if (this.meta.byName(kind).has(name)) {
      throw new SnapblockError("ALREADY_EXISTS", `${kind} '${name}' already exists`);
    }
  }

  private ensureNotOpen(d: Device): void {
    const n = this.handles.get(d.id) ?? 0;
    if (n > 0) {
      throw new SnapblockError(
        "BUSY",
        `${d.kind} '${d.name}' is in use (${n} open handle${n === 1 ? "" : "s"}, e.g. an NBD export); stop using it first`,
      );
    }
  }

  private volumeInfo(d: Device): VolumeInfo {
    const info: VolumeInfo = {
      kind: "volume",
      id: d.id,
      name: d.name,
      sizeBytes: d.sizeBytes,
      createdAt: new Date(d.createdAtMs),
    };
    if (d.sourceKind && d.sourceName) info.source = { kind: d.sourceKind, name: d.sourceName };
    const copy = this.jobs.get(d.id)?.progress() ?? this.finishedJobs.get(d.id);
    if (copy) info.copy = copy;
    const pending = this.pendingOf(d);
    if (pending) info.pending = pending;
    if (d.protection !== undefined) info.protection = d.protection;
    return info;
  }

  /**
   * What is still to arrive for `d`: its pending chunks, or none left but the last of them not
   * yet committed (a crash would bring them back), which reads as 0 pending, not complete.
   */
  private pendingOf(d: Device): PendingInfo | undefined {
    if (d.pending) return pendingInfo(d);
    const settled = this.meta.settledAt.get(d.id);
    if (!settled || settled.seq <= this.committedSeq) return undefined;
    return { source: settled.source, chunks: 0, totalChunks: settled.total };
  }

  private snapshotInfo(d: Device): SnapshotInfo {
    const pending = this.pendingOf(d);
    return {
      kind: "snapshot",
      id: d.id,
      name: d.name,
      sizeBytes: d.sizeBytes,
      createdAt: new Date(d.createdAtMs),
      sourceVolume: d.sourceName ?? "",
      sourceVolumeId: d.sourceId,
      ...(pending ? { pending } : {}),
      ...(isPointName(d.name) ? { point: true } : {}),
      ...(d.pinned ? { pinned: true } : {}),
    };
  }
}

/** Validates optional annotations before anything is recorded (an unencodable record would fail the pool). */
function checkAnnotations(annotations: StringMap | undefined, what: string): StringMap | undefined {
  return annotations === undefined ? undefined : validateStringMap(annotations, `annotations of ${what}`);
}

function sameMap(a: StringMap, b: StringMap): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && a[k] === b[k]);
}

function pendingInfo(d: Device): PendingInfo {
  const p = d.pending!;
  return { source: p.source, chunks: p.count, totalChunks: Math.max(p.total, p.count) };
}

async function storageOf(options: PoolOptions): Promise<Storage> {
  if (options.storage) return options.storage;
  if (!options.dir) throw new SnapblockError("INVALID_ARGUMENT", "a pool needs a directory");
  return NodeStorage.create(options.dir, {
    io: options.io ?? "adaptive",
    dataIo: options.dataIo ?? "buffered",
  });
}

/** tmp file, sync, rename over the target, sync the directory: the target is old or new, whole. */
async function writeAtomically(storage: Storage, name: string, contents: Buffer): Promise<void> {
  const tmp = `${name}.tmp`;
  const f = await storage.open(tmp, { create: true });
  try {
    await f.truncate(0);
    await f.write([contents], 0);
    await f.sync();
  } finally {
    await f.close();
  }
  await storage.rename(tmp, name);
  await storage.syncDir();
}

/** Differences between two metadata states, by device and logical mapping. */
function compareMetadata(live: Metadata, durable: Metadata): string[] {
  const problems: string[] = [];
  for (const d of live.devices.values()) {
    const o = durable.devices.get(d.id);
    if (!o) {
      problems.push(`${d.kind} '${d.name}' (id ${d.id}) is in memory but not in the durable metadata`);
      continue;
    }
    if (o.name !== d.name || o.kind !== d.kind || o.sizeBytes !== d.sizeBytes) {
      problems.push(`${d.kind} '${d.name}' differs between memory and the durable metadata`);
    }
    const pendingOf = (x: Device): string =>
      x.pending ? `${x.pending.source}:${x.pending.ranges().join(";")}` : "";
    if (d.protection !== o.protection) {
      problems.push(`${d.kind} '${d.name}': protection policy in memory differs from the durable one`);
    }
    if (!sameMap(d.annotations ?? {}, o.annotations ?? {})) {
      problems.push(`${d.kind} '${d.name}': annotations in memory differ from the durable ones`);
    }
    if ((d.pinned ?? false) !== (o.pinned ?? false)) {
      problems.push(`${d.kind} '${d.name}': pin in memory differs from the durable one`);
    }
    if (pendingOf(d) !== pendingOf(o)) {
      problems.push(`${d.kind} '${d.name}': pending chunks in memory differ from the durable ones`);
    }
    const a: number[] = [];
    const b: number[] = [];
    live.tables.forEachMapped(d.table, (c, p) => a.push(c, p));
    durable.tables.forEachMapped(o.table, (c, p) => b.push(c, p));
    if (a.length !== b.length || a.some((v, i) => v !== b[i])) {
      problems.push(`${d.kind} '${d.name}': chunk table in memory differs from the durable one`);
    }
  }
  for (const o of durable.devices.values()) {
    if (!live.devices.has(o.id)) problems.push(`${o.kind} '${o.name}' is durable but missing from memory`);
  }
  const noteCount = (m: Metadata): number => [...m.notes.values()].reduce((n, e) => n + e.size, 0);
  const notesDiffer =
    noteCount(live) !== noteCount(durable) ||
    [...live.notes].some(([table, entries]) =>
      [...entries].some(([name, map]) => {
        const o = durable.notes.get(table)?.get(name);
        return o === undefined || !sameMap(map, o);
      }),
    );
  if (notesDiffer) problems.push("notes in memory differ from the durable ones");
  return problems;
}

function describeVolumes(vols: readonly Device[]): string {
  return vols.length === 1
    ? `volume '${vols[0]!.name}'`
    : `volumes ${vols.map((v) => `'${v.name}'`).join(", ")}`;
}
