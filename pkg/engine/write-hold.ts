import type { Device } from "./metadata.js";
import type { SnapshotInfo } from "./types.js";

/** One snapshot of a group: which volume, and the new snapshot's name. */
export interface SnapshotPair {
  volume: string;
  snapshot: string;
}

/**
 * New writes to some volumes held back, with the writes that were in flight finished (their
 * write gates closed, locks.ts): whatever is snapshotted under it is one instant of all of them.
 * Pool.holdWrites makes one; release() reopens the volumes (always call it; it may be called
 * more than once).
 */
export class WriteHold {
  private isReleased = false;

  constructor(
    /** The held volumes, in the order their gates were closed. */
    readonly devices: readonly Device[],
    private readonly take: (hold: WriteHold, pairs: SnapshotPair[]) => Promise<SnapshotInfo[]>,
    private readonly reopen: () => void,
  ) {}

  get released(): boolean {
    return this.isReleased;
  }

  /**
   * Snapshots held volumes, all in one metadata commit: no write finished after the hold began is
   * in any of them, every write finished before it is in all. Fails (CANCELLED) once released.
   */
  snapshot(pairs: SnapshotPair[]): Promise<SnapshotInfo[]> {
    return this.take(this, pairs);
  }

  release(): void {
    if (this.isReleased) return;
    this.isReleased = true;
    this.reopen();
  }
}
