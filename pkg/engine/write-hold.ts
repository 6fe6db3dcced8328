import { SnapblockError } from "../errors/index.js";
import type { WriteGate } from "./locks.js";

/**
 * New writes held back on several volumes at once, with the writes in flight drained: the state
 * in which a group of snapshots is one consistent cut (every write acknowledged before the hold
 * is in each member, none started after it is in any). Bounded: a hold that has not drained, or
 * has not been released, within its time limit lets the writes go on by itself, so a caller that
 * died (a controller restarted between two nodes) cannot stall a workload.
 *
 * `active` says whether the hold still stands; snapshots taken under it check it in the same
 * synchronous step as they are recorded. `release()` says whether it stood until then
 * (heldThroughout): a hold that expired before every snapshot of a group was taken does not make
 * a consistent cut, and the group is discarded.
 */
export class WriteHold {
  private releases: (() => void)[] = [];
  private state: "draining" | "held" | "released" | "expired" = "draining";
  private timer: NodeJS.Timeout | undefined;
  private expired!: Promise<"expired">;
  private onExpire!: () => void;

  private constructor(
    /** Pool ids of the volumes held. */
    readonly volumeIds: ReadonlySet<number>,
    readonly timeoutMs: number,
  ) {
    this.expired = new Promise<"expired">((resolve) => {
      this.onExpire = () => resolve("expired");
    });
  }

  /**
   * Closes the gates in the given order (callers sort them by volume id, so two holds of
   * overlapping volumes cannot deadlock) and waits for each to drain. ABORTED when that takes
   * longer than timeoutMs; then nothing stays held. timeoutMs Infinity: no limit.
   */
  static async acquire(
    gates: readonly { id: number; gate: WriteGate }[],
    o: { timeoutMs: number; what: string },
  ): Promise<WriteHold> {
    const hold = new WriteHold(new Set(gates.map((g) => g.id)), o.timeoutMs);
    if (Number.isFinite(o.timeoutMs)) {
      hold.timer = setTimeout(() => hold.expire(), Math.max(0, o.timeoutMs));
      hold.timer.unref();
    }
    for (const { gate } of gates) {
      const closing = gate.hold();
      const won = await Promise.race([closing, hold.expired]);
      if (won === "expired") {
        // The gate closes later (its writes end): open it again at once.
        void closing.then((reopen) => reopen());
        throw new SnapblockError(
          "CANCELLED",
          `the writes in flight on ${o.what} did not drain within ${o.timeoutMs} ms; nothing was held, try again`,
        );
      }
      hold.releases.push(won);
      if (hold.state !== "draining") {
        hold.reopenAll();
        throw new SnapblockError(
          "CANCELLED",
          `the hold on writes to ${o.what} ended while it was being taken`,
        );
      }
    }
    hold.state = "held";
    return hold;
  }

  /** True while new writes are held on every volume of the hold. */
  get active(): boolean {
    return this.state === "held";
  }

  /** Lets the writes go on. heldThroughout: the hold had not expired before this call. */
  release(): { heldThroughout: boolean } {
    const heldThroughout = this.state === "held";
    if (this.state === "held" || this.state === "draining") this.state = "released";
    this.stop();
    return { heldThroughout };
  }

  private expire(): void {
    if (this.state === "released" || this.state === "expired") return;
    this.state = "expired";
    this.onExpire();
    this.stop();
  }

  private stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.reopenAll();
  }

  private reopenAll(): void {
    const releases = this.releases;
    this.releases = [];
    for (const reopen of releases) reopen();
  }
}
