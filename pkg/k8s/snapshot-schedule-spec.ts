import { createHash } from "node:crypto";
import { Cron } from "croner";
import { SnapblockError } from "../errors/index.js";
import type { LabelSelector } from "./kube-api.js";
import { selectorProblem } from "./label-selector.js";

/** The SnapshotSchedule custom resource (charts/snapblock/templates/snapshotschedule-crd.yaml). */
export const SCHEDULE_API = {
  group: "snapblock.dev",
  version: "v1alpha1",
  kind: "SnapshotSchedule",
  plural: "snapshotschedules",
} as const;

/** On every VolumeSnapshot a schedule makes: which schedule, which PVC, which scheduled time. */
export const SCHEDULE_LABEL = "snapblock.dev/snapshot-schedule";
export const PVC_LABEL = "snapblock.dev/pvc";
export const PVC_ANNOTATION = "snapblock.dev/pvc";
export const SCHEDULED_AT_ANNOTATION = "snapblock.dev/scheduled-at";

/** A SnapshotSchedule's spec, checked. */
export interface ScheduleSpec {
  /** Five-field cron expression (minute hour day-of-month month day-of-week), as CronJob's. */
  schedule: string;
  /** IANA time zone the expression is read in (default UTC). */
  timeZone: string;
  cron: Cron;
  selector: LabelSelector;
  /** Absent: the cluster's default VolumeSnapshotClass. */
  volumeSnapshotClassName?: string;
  keepLast?: number;
  maxAgeMs?: number;
  suspend: boolean;
}

interface RawSpec {
  schedule?: unknown;
  timeZone?: unknown;
  selector?: unknown;
  volumeSnapshotClassName?: unknown;
  retention?: { keepLast?: unknown; maxAge?: unknown } | null;
  suspend?: unknown;
}

/**
 * Reads a spec, or throws INVALID_ARGUMENT with every problem in one message (the CRD's schema
 * catches most before they are stored; this is the check for what it cannot express: the cron
 * expression, the time zone, the duration).
 */
export function parseScheduleSpec(raw: unknown): ScheduleSpec {
  const spec = (raw ?? {}) as RawSpec;
  const problems: string[] = [];
  const schedule = typeof spec.schedule === "string" ? spec.schedule.trim() : "";
  const timeZone = typeof spec.timeZone === "string" && spec.timeZone !== "" ? spec.timeZone : "UTC";
  let cron: Cron | undefined;
  if (schedule === "") problems.push('spec.schedule is required (a cron expression such as "0 * * * *")');
  else if (!validTimeZone(timeZone))
    problems.push(`spec.timeZone ${JSON.stringify(timeZone)} is not an IANA time zone`);
  else {
    try {
      cron = new Cron(schedule, { timezone: timeZone, mode: "5-part", paused: true });
      if (cron.nextRun(new Date(0)) === null)
        problems.push(`spec.schedule ${JSON.stringify(schedule)} never fires`);
    } catch (err) {
      problems.push(
        `spec.schedule ${JSON.stringify(schedule)} is not a five-field cron expression (minute hour day-of-month month day-of-week): ${err instanceof Error ? err.message : String(err)}`,
      );
    }
  }
  const selectorIssue =
    spec.selector === undefined
      ? "spec.selector is required ({} picks every PVC of the namespace)"
      : selectorProblem(spec.selector);
  if (selectorIssue)
    problems.push(selectorIssue.startsWith("spec.") ? selectorIssue : `spec.${selectorIssue}`);
  const className = spec.volumeSnapshotClassName;
  if (className !== undefined && (typeof className !== "string" || className === ""))
    problems.push("spec.volumeSnapshotClassName must be a non-empty string when set");
  const retention = spec.retention ?? {};
  let keepLast: number | undefined;
  let maxAgeMs: number | undefined;
  if (retention.keepLast !== undefined) {
    if (
      typeof retention.keepLast === "number" &&
      Number.isInteger(retention.keepLast) &&
      retention.keepLast >= 1
    )
      keepLast = retention.keepLast;
    else
      problems.push(
        `spec.retention.keepLast must be a whole number >= 1, not ${JSON.stringify(retention.keepLast)}`,
      );
  }
  if (retention.maxAge !== undefined) {
    maxAgeMs = typeof retention.maxAge === "string" ? parseDuration(retention.maxAge) : undefined;
    if (maxAgeMs === undefined)
      problems.push(
        `spec.retention.maxAge ${JSON.stringify(retention.maxAge)} is not a duration (e.g. 36h, 7d, 2w, 1h30m)`,
      );
  }
  if (
    keepLast === undefined &&
    maxAgeMs === undefined &&
    !problems.some((p) => p.startsWith("spec.retention"))
  )
    problems.push(
      "spec.retention needs keepLast or maxAge (or both): snapshots without retention fill the pool",
    );
  if (spec.suspend !== undefined && typeof spec.suspend !== "boolean")
    problems.push("spec.suspend must be true or false");
  if (problems.length > 0 || !cron) throw new SnapblockError("INVALID_ARGUMENT", problems.join("; "));
  return {
    schedule,
    timeZone,
    cron,
    selector: spec.selector as LabelSelector,
    ...(typeof className === "string" ? { volumeSnapshotClassName: className } : {}),
    ...(keepLast !== undefined ? { keepLast } : {}),
    ...(maxAgeMs !== undefined ? { maxAgeMs } : {}),
    suspend: spec.suspend === true,
  };
}

function validTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat("en", { timeZone: zone });
    return true;
  } catch {
    // RangeError: the runtime knows no such zone.
    return false;
  }
}

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** "36h", "7d", "1h30m", "2w": milliseconds, or undefined when it is not such a duration (or is 0). */
export function parseDuration(text: string): number | undefined {
  const t = text.trim();
  if (!/^(\d+[smhdw])+$/.test(t)) return undefined;
  let ms = 0;
  for (const m of t.matchAll(/(\d+)([smhdw])/g)) ms += Number(m[1]) * UNIT_MS[m[2]!]!;
  return ms > 0 && Number.isSafeInteger(ms) ? ms : undefined;
}

/** The latest time the schedule fired at or before `now`, if any. */
export function latestRunAtOrBefore(cron: Cron, now: Date): Date | undefined {
  // previousRuns counts strictly before its reference.
  return cron.previousRuns(1, new Date(now.getTime() + 1))[0];
}

/** The next time the schedule fires after `now`. */
export function nextRunAfter(cron: Cron, now: Date): Date | undefined {
  return cron.nextRun(now) ?? undefined;
}

/**
 * The name of the VolumeSnapshot a schedule makes of a PVC for one scheduled time:
 * <pvc>-<schedule>-<yyyymmddhhmm> (UTC). Deterministic, so a retried or repeated reconcile asks
 * for the same name and the API server's name uniqueness prevents a duplicate. Too long for a
 * name (253 characters), the front is cut and a hash of the whole keeps it unique.
 */
export function scheduledSnapshotName(pvc: string, schedule: string, at: Date): string {
  const stamp = at.toISOString().slice(0, 16).replace(/[-:T]/g, "");
  const front = `${pvc}-${schedule}`;
  const max = 253 - stamp.length - 1;
  if (front.length <= max) return `${front}-${stamp}`;
  const hash = shortHash(front);
  return `${front.slice(0, max - hash.length - 1).replace(/[-.]+$/, "")}-${hash}-${stamp}`;
}

/** A name as a label value (63 characters at most): itself, or its front and a hash. */
export function labelValue(name: string): string {
  if (name.length <= 63) return name;
  const hash = shortHash(name);
  return `${name.slice(0, 63 - hash.length - 1).replace(/[-._]+$/, "")}-${hash}`;
}

function shortHash(text: string): string {
  return createHash("sha256").update(text).digest("hex").slice(0, 10);
}
