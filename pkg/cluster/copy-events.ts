import type { EventRecorder, ObjectRef } from "./event-recorder.js";
import type { EngineApi, EngineCreateVolumeOptions, EngineVolume } from "../engine-api/index.js";

export interface CopyEventsOptions {
  events: EventRecorder;
  /** How often a running copy's progress is asked for (default 5 s). */
  pollMs?: number;
}

/**
 * Kubernetes Events for full background copies (a restore or clone with the full-copy option):
 * "BackgroundCopyStarted" on the PVC when the volume is created, then "BackgroundCopyFinished",
 * "BackgroundCopyFailed" or "BackgroundCopyCancelled" when the copy ends, so `kubectl describe
 * pvc` tells the user when the volume stopped depending on its source. The copy runs on the node;
 * the controller learns its end by asking the node for the volume now and then.
 */
export class CopyEvents {
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;

  constructor(private readonly o: CopyEventsOptions) {}

  /** `target` with its createVolume reporting a full copy's start and end on `pvc`. */
  wrap(target: EngineApi, pvc: ObjectRef | undefined): EngineApi {
    if (!pvc) return target;
    return new Proxy(target, {
      get: (t, prop): unknown => {
        if (prop === "createVolume") {
          return async (o: EngineCreateVolumeOptions): Promise<EngineVolume> => {
            const volume = await t.createVolume(o);
            if (volume.pull) this.pullStarted(t, volume, pvc);
            else if (o.fullCopy && o.source) this.started(t, o.name, pvc);
            return volume;
          };
        }
        const value: unknown = Reflect.get(t, prop, t);
        return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(t) : value;
      },
    });
  }

  /** Stops watching (controller shutdown); copies go on, on their nodes. */
  close(): void {
    this.closed = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
  }

  private started(engine: EngineApi, name: string, pvc: ObjectRef): void {
    this.o.events.record({
      involved: pvc,
      type: "Normal",
      reason: "BackgroundCopyStarted",
      message: `volume ${engine.nodeId}/${name}: copying every chunk from its source in the background; the volume is usable meanwhile`,
    });
    this.poll(engine, name, pvc);
  }

  /** A volume restored from another node's snapshot: its content arrives in the background. */
  private pullStarted(engine: EngineApi, volume: EngineVolume, pvc: ObjectRef): void {
    const pull = volume.pull!;
    this.o.events.record({
      involved: pvc,
      type: "Normal",
      reason: "RestoreCopyStarted",
      message: `volume ${engine.nodeId}/${volume.name}: copying ${pull.totalChunks} chunks from snapshot ${pull.origin} on another node in the background; the volume is usable meanwhile`,
    });
    this.pollPull(engine, volume.name, pvc, false);
  }

  private pollPull(engine: EngineApi, name: string, pvc: ObjectRef, stalledReported: boolean): void {
    if (this.closed) return;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      void engine.getVolume(name).then(
        (volume) => {
          if (!volume) return; // deleted meanwhile
          const id = `${engine.nodeId}/${name}`;
          if (!volume.pull) {
            this.o.events.record({
              involved: pvc,
              type: "Normal",
              reason: "RestoreCopyFinished",
              message: `volume ${id}: every chunk of its snapshot is on this node now`,
            });
            return;
          }
          const stalled = volume.pull.state === "stalled";
          if (stalled && !stalledReported) {
            this.o.events.record({
              involved: pvc,
              type: "Warning",
              reason: "RestoreCopyStalled",
              message: `volume ${id}: ${volume.pull.pendingChunks} chunk(s) of snapshot ${volume.pull.origin} cannot be fetched now (${volume.pull.error ?? "no holder answers"}); reads of them fail until a holder is back or a replica takes over`,
            });
          }
          this.pollPull(engine, name, pvc, stalled);
        },
        () => this.pollPull(engine, name, pvc, stalledReported),
      );
    }, this.o.pollMs ?? 5000);
    timer.unref();
    this.timers.add(timer);
  }

  private poll(engine: EngineApi, name: string, pvc: ObjectRef): void {
    if (this.closed) return;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      void engine.getVolume(name).then(
        (volume) => this.report(engine, name, pvc, volume),
        // The node is unreachable for now: its copy goes on (or resumes when it restarts).
        () => this.poll(engine, name, pvc),
      );
    }, this.o.pollMs ?? 5000);
    timer.unref();
    this.timers.add(timer);
  }

  private report(engine: EngineApi, name: string, pvc: ObjectRef, volume: EngineVolume | undefined): void {
    const copy = volume?.copy;
    // A deleted volume, or one whose copy state is gone (a node restart after it ended): nothing to say.
    if (!copy) return;
    if (copy.state === "running") {
      this.poll(engine, name, pvc);
      return;
    }
    const id = `${engine.nodeId}/${name}`;
    if (copy.state === "done") {
      this.o.events.record({
        involved: pvc,
        type: "Normal",
        reason: "BackgroundCopyFinished",
        message: `volume ${id}: all ${copy.totalChunks} chunks copied; it shares nothing with its source now`,
      });
    } else if (copy.state === "failed") {
      this.o.events.record({
        involved: pvc,
        type: "Warning",
        reason: "BackgroundCopyFailed",
        message: `volume ${id}: background copy failed after ${copy.copiedChunks} of ${copy.totalChunks} chunks: ${copy.error ?? "unknown error"}; the volume stays usable and still shares the rest with its source`,
      });
    } else {
      this.o.events.record({
        involved: pvc,
        type: "Normal",
        reason: "BackgroundCopyCancelled",
        message: `volume ${id}: background copy stopped after ${copy.copiedChunks} of ${copy.totalChunks} chunks${copy.error ? ` (${copy.error})` : ""}; the volume still shares the rest with its source`,
      });
    }
  }
}
