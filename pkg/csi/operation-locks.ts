import { StatusError } from "../errors/index.js";

/**
 * Per-volume and per-snapshot locks of the CSI services. CSI spec, "Concurrency": the CO is
 * responsible for no more than one call in flight per volume, but may lose state and issue
 * several; "The Plugin SHOULD handle this as gracefully as possible" and "MAY return [ABORTED]
 * to reject secondary calls". So a conflicting call never waits: it fails at once with ABORTED
 * and the CO retries with backoff.
 *
 * A call claims its resources exclusively (it changes them) or shared (it reads them or depends
 * on them staying, e.g. CreateSnapshot on its source volume). Claims are taken all at once or
 * not at all, so there is no lock ordering to get wrong.
 */
export type LockMode = "exclusive" | "shared";

export interface LockClaim {
  /** e.g. "volume:pvc-123", "snapshot:snap-1" */
  key: string;
  mode: LockMode;
}

interface Holder {
  exclusive?: string;
  shared: Map<string, number>;
}

export class OperationLocks {
  private readonly held = new Map<string, Holder>();

  /** Takes every claim or throws ABORTED naming the operation in the way. Returns the release. */
  acquire(claims: readonly LockClaim[], operation: string): () => void {
    for (const claim of claims) {
      const holder = this.held.get(claim.key);
      if (!holder) continue;
      const blocker =
        holder.exclusive ??
        (claim.mode === "exclusive" && holder.shared.size > 0 ? [...holder.shared.keys()][0] : undefined);
      if (blocker !== undefined) {
        throw new StatusError(
          "ABORTED",
          `an operation is already in progress for ${claim.key.replace(":", " ")} (${blocker}); retry when it has finished`,
        );
      }
    }
    for (const claim of claims) {
      const holder = this.held.get(claim.key) ?? { shared: new Map<string, number>() };
      if (claim.mode === "exclusive") holder.exclusive = operation;
      else holder.shared.set(operation, (holder.shared.get(operation) ?? 0) + 1);
      this.held.set(claim.key, holder);
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const claim of claims) {
        const holder = this.held.get(claim.key);
        if (!holder) continue;
        if (claim.mode === "exclusive") delete holder.exclusive;
        else {
          const n = (holder.shared.get(operation) ?? 1) - 1;
          if (n > 0) holder.shared.set(operation, n);
          else holder.shared.delete(operation);
        }
        if (holder.exclusive === undefined && holder.shared.size === 0) this.held.delete(claim.key);
      }
    };
  }

  /** Runs fn with the claims held. */
  async with<T>(claims: readonly LockClaim[], operation: string, fn: () => Promise<T>): Promise<T> {
    const release = this.acquire(claims, operation);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /** Number of resources with a holder (tests, shutdown diagnostics). */
  get size(): number {
    return this.held.size;
  }
}

export const volumeLock = (engineName: string, mode: LockMode): LockClaim => ({
  key: `volume:${engineName}`,
  mode,
});
export const snapshotLock = (engineName: string, mode: LockMode): LockClaim => ({
  key: `snapshot:${engineName}`,
  mode,
});
export const groupSnapshotLock = (engineName: string, mode: LockMode): LockClaim => ({
  key: `group snapshot:${engineName}`,
  mode,
});
