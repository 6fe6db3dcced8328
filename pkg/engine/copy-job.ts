import { asSnapblockError } from "../errors/index.js";
import type { DataPath } from "./data-path.js";
import type { Device } from "./metadata.js";
import type { PoolCore } from "./pool-core.js";
import { RecordType } from "./records.js";
import type { CopyProgress } from "./types.js";

const PARALLEL = 4;

/**
 * The "clone with background copy" technique: a volume created sharing its source's chunks is
 * made independent chunk by chunk. Each still-shared chunk is read and written to a chunk of its
 * own through the normal write path (same locks, same redirect-on-write), so user writes to the
 * volume may go on meanwhile. When the copy ends, the volume shares no data chunk with anyone.
 * A copy interrupted by a crash resumes at open (the device keeps its `copying` flag).
 */
export class CopyJob {
  readonly done: Promise<void>;
  private state: CopyProgress["state"] = "running";
  private copied = 0;
  private total = 0;
  private error: string | undefined;
  private cancelReason: string | undefined;

  constructor(
    private readonly core: PoolCore,
    private readonly io: DataPath,
    private readonly device: Device,
  ) {
    this.done = this.run();
  }

  cancel(reason: string): void {
    this.cancelReason ??= reason;
  }

  progress(): CopyProgress {
    const p: CopyProgress = { state: this.state, copiedChunks: this.copied, totalChunks: this.total };
    if (this.error) p.error = this.error;
    return p;
  }

  private async run(): Promise<void> {
    await Promise.resolve(); // let the creator register the job first
    const chunks: number[] = [];
    this.core.tables.forEachMapped(this.device.table, (c, _p, exclusive) => {
      if (!exclusive) chunks.push(c);
    });
    this.total = chunks.length;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < chunks.length && this.cancelReason === undefined && this.core.alive(this.device)) {
        const chunk = chunks[next++]!;
        await this.copyChunk(chunk);
        this.copied++;
      }
    };
    try {
      await Promise.all(Array.from({ length: PARALLEL }, worker));
      if (!this.core.alive(this.device)) {
        this.state = "cancelled";
        return;
      }
      this.state = this.cancelReason === undefined ? "done" : "cancelled";
      if (this.cancelReason) this.error = this.cancelReason;
      this.core.record({ type: RecordType.CopyState, id: this.device.id, copying: false });
      await this.core.commit();
    } catch (err) {
      this.state = "failed";
      this.error = asSnapblockError(err, `background copy of volume '${this.device.name}'`).message;
    }
  }

  private async copyChunk(chunk: number): Promise<void> {
    const lk = this.core.tables.lookup(this.device.table, chunk, this.core.committedSeq);
    if (lk.chunk < 0 || lk.inPlace) return;
    await this.io.unshare(this.device, chunk);
  }
}
