import type { ChunkSpace } from "./chunk-space.js";
import type { ChunkTables } from "./chunk-tree.js";
import type { ChunkLocks, WriteGate } from "./locks.js";
import type { Device, Metadata } from "./metadata.js";
import type { MetaRecord } from "./records.js";
import type { StorageFile } from "./storage.js";
import type { EngineObserver } from "./types.js";

/** What the data path and the background copier need from the pool that owns them. */
export interface PoolCore {
  readonly meta: Metadata;
  readonly space: ChunkSpace;
  readonly tables: ChunkTables;
  readonly data: StorageFile;
  readonly chunkSize: number;
  readonly locks: ChunkLocks;
  readonly observer: EngineObserver;
  /**
   * Whether partial chunks are at their hard bound (twice the filler's): there writes make no new
   * ones (a partly written shared chunk is copied whole instead), so their memory stays bounded
   * when the filler falls behind.
   */
  atPartialCeiling(): boolean;
  /** Highest record sequence number that is durable. */
  readonly committedSeq: number;
  /** Applies a record to memory and queues it for the next commit; returns its sequence number. */
  record(r: MetaRecord): number;
  /** Makes every completed write and every applied record durable. */
  commit(): Promise<void>;
  /** Throws if the pool is closed or failed. */
  ensureUsable(): void;
  gate(device: Device): WriteGate;
  /** Whether `device` is still in the pool (it may be deleted while an operation waits). */
  alive(device: Device): boolean;
  /** Fills these pending chunks of `device` (fetching them from its source); IO error if it cannot. */
  ensureFilled(device: Device, chunks: number[]): Promise<void>;
}
