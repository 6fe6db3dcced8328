import { isSnapblockError } from "../errors/index.js";
import type { EventRecorder } from "../cluster/index.js";
import type { Logger } from "../log/index.js";
import type {
  KubeApi,
  KubeSnapshotSchedule,
  KubeVolumeSnapshot,
  SnapshotScheduleStatus,
} from "./kube-api.js";
import { retentionDeletes, type RetainedSnapshot } from "./schedule-retention.js";
import {
  PVC_ANNOTATION,
  PVC_LABEL,
  SCHEDULED_AT_ANNOTATION,
  SCHEDULE_API,
  SCHEDULE_LABEL,
  labelValue,
  latestRunAtOrBefore,
  nextRunAfter,
  parseScheduleSpec,
  scheduledSnapshotName,
  type ScheduleSpec,
} from "./snapshot-schedule-spec.js";

export interface SnapshotSchedulesOptions {
  api: KubeApi;
  logger: Logger;
  /** Reports on the SnapshotSchedule (created, deleted by retention, failures). */
  events: EventRecorder;
  /** The clock (tests simulate one). */
  now?: () => Date;
  /** How often schedules are listed again when no snapshot is due sooner (default 30 s). */
  pollMs?: number;
}

/** What one reconcile of one schedule did (for logs, tests and the hack/ script). */
export interface ScheduleOutcome {
  schedule: string;
  created: string[];
  deleted: string[];
  errors: string[];
  next?: Date;
}

/**
 * Scheduled VolumeSnapshots (docs/snapshot-schedules.md): for every SnapshotSchedule, at each time
 * its cron expression names, a VolumeSnapshot of every PVC its selector picks, owned by the
 * schedule and named after the PVC and the scheduled time; retention deletes the schedule's own
 * snapshots past keepLast / maxAge (never one it does not own); the status and Events say what
 * happened. The leader controller runs it; the state lives in the API (the snapshots' names,
 * labels and owner, the schedule's status), so a restarted controller carries on without
 * duplicating anything.
 */
export class SnapshotSchedules {
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;
  /** Last error reported as an Event per schedule uid, so a lasting error is one Event, not one per poll. */
  private readonly reported = new Map<string, string>();

  constructor(private readonly o: SnapshotSchedulesOptions) {}

  private now(): Date {
    return this.o.now?.() ?? new Date();
  }

  /** Reconciles now, then again when the next snapshot is due or after the poll interval. */
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
    let wait = this.o.pollMs ?? 30_000;
    try {
      const outcomes = await this.reconcileAll();
      const now = this.now().getTime();
      for (const o of outcomes) if (o.next) wait = Math.min(wait, Math.max(0, o.next.getTime() - now) + 500);
    } catch (err) {
      this.o.logger.warn("listing SnapshotSchedules failed; trying again", { err });
    }
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.loop(), wait);
    this.timer.unref();
  }

  /** One pass over every SnapshotSchedule of the cluster. */
  async reconcileAll(): Promise<ScheduleOutcome[]> {
    const schedules = await this.o.api.listSnapshotSchedules();
    const outcomes: ScheduleOutcome[] = [];
    for (const s of schedules) outcomes.push(await this.reconcile(s));
    const live = new Set(schedules.map((s) => s.uid));
    for (const uid of this.reported.keys()) if (!live.has(uid)) this.reported.delete(uid);
    return outcomes;
  }

  /** One schedule: create what is due, apply retention, record the status. Never throws. */
  async reconcile(schedule: KubeSnapshotSchedule): Promise<ScheduleOutcome> {
    const id = `${schedule.namespace}/${schedule.name}`;
    const outcome: ScheduleOutcome = { schedule: id, created: [], deleted: [], errors: [] };
    const status: SnapshotScheduleStatus = { ...schedule.status, observedGeneration: schedule.generation };
    let spec: ScheduleSpec;
    try {
      spec = parseScheduleSpec(schedule.spec);
    } catch (err) {
      // A bad spec changes nothing (no snapshot made or deleted); the status and an Event say why.
      const message = err instanceof Error ? err.message : String(err);
      outcome.errors.push(message);
      delete status.nextSnapshotTime;
      await this.finish(schedule, status, outcome, "InvalidSchedule");
      return outcome;
    }
    const now = this.now();
    const next = nextRunAfter(spec.cron, now);
    if (next) outcome.next = next;
    try {
      const owned = await this.ownedSnapshots(schedule);
      if (!spec.suspend) {
        // A PVC not bound (yet) has nothing to snapshot; one being deleted is left alone.
        const pvcs = (await this.o.api.listPvcs(schedule.namespace, spec.selector))
          .filter((p) => p.phase === "Bound" && !p.deleting)
          .map((p) => p.name);
        status.selectedPVCs = pvcs.length;
        const due = latestRunAtOrBefore(spec.cron, now);
        const last = status.lastScheduleTime ? new Date(status.lastScheduleTime) : undefined;
        // A schedule fires only for times after it was made, once per time (lastScheduleTime),
        // and after a downtime only for the latest time missed (as a CronJob does).
        if (due && due.getTime() >= schedule.creationTimestamp.getTime() && (!last || due > last)) {
          const complete = await this.takeSnapshots(schedule, spec, pvcs, due, owned, outcome);
          if (complete) status.lastScheduleTime = due.toISOString();
        }
        await this.applyRetention(schedule, spec, owned, now, outcome);
      }
      status.snapshotCount = owned.length;
      const newest = owned.reduce<Date | undefined>(
        (max, s) => (s.creationTimestamp && (!max || s.creationTimestamp > max) ? s.creationTimestamp : max),
        undefined,
      );
      if (newest) status.lastSnapshotTime = newest.toISOString();
    } catch (err) {
      outcome.errors.push(err instanceof Error ? err.message : String(err));
    }
    if (next && !spec.suspend) status.nextSnapshotTime = next.toISOString();
    else delete status.nextSnapshotTime;
    await this.finish(schedule, status, outcome, "SnapshotScheduleFailed");
    return outcome;
  }

  /** The VolumeSnapshots this schedule owns: its label and, to be sure, its uid as controller. */
  private async ownedSnapshots(schedule: KubeSnapshotSchedule): Promise<KubeVolumeSnapshot[]> {
    const labelled = await this.o.api.listVolumeSnapshots(schedule.namespace, {
      [SCHEDULE_LABEL]: labelValue(schedule.name),
    });
    return labelled.filter((s) =>
      s.ownerReferences.some((r) => r.uid === schedule.uid && r.controller === true),
    );
  }

  /**
   * The snapshots of one scheduled time, one per selected PVC; `owned` gains what was made.
   * Returns whether every PVC has its snapshot for that time.
   */
  private async takeSnapshots(
    schedule: KubeSnapshotSchedule,
    spec: ScheduleSpec,
    pvcs: string[],
    due: Date,
    owned: KubeVolumeSnapshot[],
    outcome: ScheduleOutcome,
  ): Promise<boolean> {
    let complete = true;
    for (const pvc of pvcs) {
      const name = scheduledSnapshotName(pvc, schedule.name, due);
      if (owned.some((s) => s.name === name)) continue; // made by an earlier pass
      try {
        const made = await this.o.api.createVolumeSnapshot({
          namespace: schedule.namespace,
          name,
          labels: { [SCHEDULE_LABEL]: labelValue(schedule.name), [PVC_LABEL]: labelValue(pvc) },
          annotations: { [PVC_ANNOTATION]: pvc, [SCHEDULED_AT_ANNOTATION]: due.toISOString() },
          ownerReferences: [
            {
              apiVersion: `${SCHEDULE_API.group}/${SCHEDULE_API.version}`,
              kind: SCHEDULE_API.kind,
              name: schedule.name,
              uid: schedule.uid,
              controller: true,
            },
          ],
          pvcName: pvc,
          ...(spec.volumeSnapshotClassName ? { className: spec.volumeSnapshotClassName } : {}),
        });
        owned.push(made);
        outcome.created.push(name);
      } catch (err) {
        complete = false;
        outcome.errors.push(
          isSnapblockError(err, "ALREADY_EXISTS")
            ? `VolumeSnapshot ${name} exists but is not this schedule's; rename or delete it`
            : `creating VolumeSnapshot ${name} of PVC ${pvc}: ${err instanceof Error ? err.message : String(err)}`,
        );
      }
    }
    if (outcome.created.length > 0) {
      this.event(
        schedule,
        "Normal",
        "SnapshotsCreated",
        `created ${outcome.created.length} VolumeSnapshot(s) for ${due.toISOString()}: ${outcome.created.join(", ")}`,
      );
    }
    return complete;
  }

  private async applyRetention(
    schedule: KubeSnapshotSchedule,
    spec: ScheduleSpec,
    owned: KubeVolumeSnapshot[],
    now: Date,
    outcome: ScheduleOutcome,
  ): Promise<void> {
    const candidates: Array<RetainedSnapshot & { object: KubeVolumeSnapshot }> = owned.map((s) => {
      const at = new Date(s.annotations[SCHEDULED_AT_ANNOTATION] ?? "");
      return {
        name: s.name,
        pvc: s.annotations[PVC_ANNOTATION] ?? s.pvcName,
        at: Number.isNaN(at.getTime()) ? (s.creationTimestamp ?? now) : at,
        ready: s.readyToUse === true,
        object: s,
      };
    });
    const policy = {
      ...(spec.keepLast !== undefined ? { keepLast: spec.keepLast } : {}),
      ...(spec.maxAgeMs !== undefined ? { maxAgeMs: spec.maxAgeMs } : {}),
    };
    const doomed = retentionDeletes(candidates, policy, now) as typeof candidates;
    for (const d of doomed) {
      try {
        // The uid precondition: only the very object retention decided on.
        if (d.object.uid) await this.o.api.deleteVolumeSnapshot(schedule.namespace, d.name, d.object.uid);
        outcome.deleted.push(d.name);
      } catch (err) {
        if (isSnapblockError(err, "NOT_FOUND")) outcome.deleted.push(d.name);
        else
          outcome.errors.push(
            `deleting VolumeSnapshot ${d.name}: ${err instanceof Error ? err.message : String(err)}`,
          );
      }
    }
    const gone = new Set(outcome.deleted);
    for (let i = owned.length - 1; i >= 0; i--) if (gone.has(owned[i]!.name)) owned.splice(i, 1);
    if (outcome.deleted.length > 0) {
      this.event(
        schedule,
        "Normal",
        "SnapshotsDeleted",
        `retention deleted ${outcome.deleted.length} VolumeSnapshot(s): ${outcome.deleted.join(", ")}`,
      );
    }
  }

  /** Records the status (when it changed), a Warning Event for a new error, and a log line. */
  private async finish(
    schedule: KubeSnapshotSchedule,
    status: SnapshotScheduleStatus,
    outcome: ScheduleOutcome,
    reason: string,
  ): Promise<void> {
    const error = outcome.errors.join("; ");
    status.lastError = error;
    if (error !== "" && this.reported.get(schedule.uid) !== error) {
      this.event(schedule, "Warning", reason, error);
    }
    this.reported.set(schedule.uid, error);
    if (outcome.created.length > 0 || outcome.deleted.length > 0 || error !== "") {
      this.o.logger[error === "" ? "info" : "warn"]("snapshot schedule reconciled", {
        schedule: outcome.schedule,
        created: outcome.created.length,
        deleted: outcome.deleted.length,
        ...(error !== "" ? { error } : {}),
      });
    }
    if (sameStatus(schedule.status, status)) return; // nothing new: no write
    try {
      await this.o.api.patchSnapshotScheduleStatus(schedule.namespace, schedule.name, status);
    } catch (err) {
      this.o.logger.warn("recording a SnapshotSchedule's status failed", { schedule: outcome.schedule, err });
    }
  }

  private event(
    schedule: KubeSnapshotSchedule,
    type: "Normal" | "Warning",
    reason: string,
    message: string,
  ): void {
    this.o.events.record({
      involved: {
        kind: SCHEDULE_API.kind,
        apiVersion: `${SCHEDULE_API.group}/${SCHEDULE_API.version}`,
        namespace: schedule.namespace,
        name: schedule.name,
        uid: schedule.uid,
      },
      type,
      reason,
      message,
    });
  }
}

function sameStatus(a: SnapshotScheduleStatus | undefined, b: SnapshotScheduleStatus): boolean {
  const keys = new Set([...Object.keys(a ?? {}), ...Object.keys(b)]) as Set<keyof SnapshotScheduleStatus>;
  for (const k of keys) if ((a?.[k] ?? undefined) !== (b[k] ?? undefined)) return false;
  return true;
}
