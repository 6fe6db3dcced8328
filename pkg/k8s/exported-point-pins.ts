import { isSnapblockError } from "../errors/index.js";
import type { EventRecorder } from "../cluster/index.js";
import type { Logger } from "../log/index.js";
import type { KubeApi, KubeVolumeSnapshotContent } from "./kube-api.js";

/**
 * The pins of recovery points, as the reconciler needs them. The controller wires the operator
 * service's path (pkg/operator pointPinner: the pin is made on the point's node through its engine
 * service, as SetPointPinned does).
 */
export interface PointPinner {
  /** The node holding the recovery point a snapshot id names; undefined when it names no point. */
  pointNode(snapshotId: string): string | undefined;
  /**
   * Pins the point (idempotent: a pinned point stays pinned). NOT_FOUND when there is no such
   * point (thinned before anyone pinned it, or deleted); any other error is worth a retry (the
   * node is down or unknown for now).
   */
  pin(snapshotId: string): Promise<void>;
}

export interface ExportedPointPinsOptions {
  api: KubeApi;
  /** Our CSI driver name: VolumeSnapshotContents of other drivers are none of ours. */
  driver: string;
  points: PointPinner;
  /** A Warning Event on a VolumeSnapshotContent whose point is gone. */
  events: EventRecorder;
  logger: Logger;
  /** The clock, in ms (tests simulate one). */
  now?: () => number;
  /** How often the VolumeSnapshotContents are listed (default 10 s). */
  pollMs?: number;
  /**
   * How long a pin made stays trusted before it is made again (default 10 min). Between, a pass
   * asks no node anything for that content, so a pass where nothing changed is one list call; a
   * point unpinned by hand (`snapblock volume unpin`) while a content still names it is pinned
   * again within this time.
   */
  recheckMs?: number;
}

/** What one pass did, by VolumeSnapshotContent name (for logs and tests). */
export interface PointPinsPass {
  /** Pins made or confirmed by asking the point's node. */
  pinned: string[];
  /** Contents whose point does not exist (a Warning Event the first time). */
  missing: string[];
  /** Pins that failed for now (node down): tried again next pass. */
  failed: string[];
  /** Contents pinned within recheckMs, not asked again. */
  unchanged: number;
}

interface Known {
  handle: string;
  state: "pinned" | "missing";
  atMs: number;
}

/**
 * Pins the recovery point of every pre-provisioned VolumeSnapshotContent of our driver
 * (docs/protection.md, "Exported points"): a content written by hand or by a backup tool, not by
 * `snapblock volume points --kubernetes`, must not lose its point to thinning. A content's
 * `spec.source.snapshotHandle` naming a point (`<node>/rp--...`) gets that point pinned on its
 * node; contents of other drivers, of user snapshots, or being deleted are left alone. Never
 * unpins: a deleted content's point is DeleteSnapshot's business (deletionPolicy Delete) or the
 * user's (Retain).
 *
 * The leader controller runs it: the state is the pins in the pools and the contents in the API,
 * so a new leader starts with an empty memory, pins everything once more (idempotent) and carries
 * on. A point that is gone gets one Warning Event per content and leader; a node that is down is
 * asked again every pass, and the rest of that pass skips its other points.
 */
export class ExportedPointPins {
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;
  private running: Promise<PointPinsPass> | undefined;
  /** What the last passes found, by content uid. */
  private readonly known = new Map<string, Known>();
  /** The last failure logged per content uid, so a lasting one is one log line, not one per poll. */
  private readonly failures = new Map<string, string>();

  constructor(private readonly o: ExportedPointPinsOptions) {}

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }

  /** Reconciles now, then every poll interval until stop(). */
  start(): void {
    this.stopped = false;
    void this.loop();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private async loop(): Promise<void> {
    if (this.stopped) return;
    try {
      await this.reconcileAll();
    } catch (err) {
      this.o.logger.warn("listing VolumeSnapshotContents failed; trying again", { err });
    }
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.loop(), this.o.pollMs ?? 10_000);
    this.timer.unref();
  }

  /** One pass over every VolumeSnapshotContent (one at a time: a pass joins one in flight). */
  reconcileAll(): Promise<PointPinsPass> {
    this.running ??= this.pass().finally(() => (this.running = undefined));
    return this.running;
  }

  private async pass(): Promise<PointPinsPass> {
    const contents = await this.o.api.listVolumeSnapshotContents();
    const result: PointPinsPass = { pinned: [], missing: [], failed: [], unchanged: 0 };
    const live = new Set<string>();
    /** Nodes whose pin failed in this pass: their other points wait for the next. */
    const down = new Set<string>();
    for (const content of contents) {
      const point = this.pointOf(content);
      if (!point) continue;
      const { handle, node } = point;
      const key = content.uid || content.name;
      live.add(key);
      const known = this.known.get(key);
      const now = this.now();
      const fresh = known?.handle === handle && now - known.atMs < (this.o.recheckMs ?? 600_000);
      if (fresh) {
        result.unchanged++;
        continue;
      }
      if (down.has(node)) {
        result.failed.push(content.name);
        continue;
      }
      try {
        await this.o.points.pin(handle);
        this.known.set(key, { handle, state: "pinned", atMs: now });
        this.failures.delete(key);
        result.pinned.push(content.name);
        if (known?.handle !== handle || known.state !== "pinned") {
          this.o.logger.info("pinned the recovery point a VolumeSnapshotContent names", {
            content: content.name,
            snapshotId: handle,
          });
        }
      } catch (err) {
        if (isSnapblockError(err, "NOT_FOUND")) {
          this.known.set(key, { handle, state: "missing", atMs: now });
          this.failures.delete(key);
          result.missing.push(content.name);
          if (known?.handle !== handle || known.state !== "missing") this.reportMissing(content, handle);
        } else {
          down.add(node);
          result.failed.push(content.name);
          this.reportFailure(key, content, handle, err);
        }
      }
    }
    for (const key of this.known.keys()) if (!live.has(key)) this.known.delete(key);
    for (const key of this.failures.keys()) if (!live.has(key)) this.failures.delete(key);
    return result;
  }

  /** The point a content names, when it is ours, pre-provisioned, not being deleted, and a point. */
  private pointOf(c: KubeVolumeSnapshotContent): { handle: string; node: string } | undefined {
    if (c.driver !== this.o.driver || c.deleting || !c.snapshotHandle) return undefined;
    const node = this.o.points.pointNode(c.snapshotHandle);
    return node === undefined ? undefined : { handle: c.snapshotHandle, node };
  }

  private reportMissing(content: KubeVolumeSnapshotContent, handle: string): void {
    const message = `recovery point ${handle} no longer exists (thinned by its policy before it was pinned, or deleted): the VolumeSnapshot bound to this content has no data; delete both`;
    this.o.logger.warn("a VolumeSnapshotContent names a recovery point that does not exist", {
      content: content.name,
      snapshotId: handle,
    });
    this.o.events.record({
      involved: {
        kind: "VolumeSnapshotContent",
        apiVersion: "snapshot.storage.k8s.io/v1",
        namespace: "",
        name: content.name,
        ...(content.uid ? { uid: content.uid } : {}),
      },
      type: "Warning",
      reason: "RecoveryPointMissing",
      message,
    });
  }

  private reportFailure(key: string, content: KubeVolumeSnapshotContent, handle: string, err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    if (this.failures.get(key) === message) return;
    this.failures.set(key, message);
    this.o.logger.warn("pinning the recovery point of a VolumeSnapshotContent failed; trying again", {
      content: content.name,
      snapshotId: handle,
      err,
    });
  }
}
