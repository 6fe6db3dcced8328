/** One VolumeSnapshot a schedule owns, as retention sees it. */
export interface RetainedSnapshot {
  name: string;
  /** The PVC it is of (retention counts per PVC, including PVCs that are gone). */
  pvc: string;
  /** Its scheduled time (or, lacking that, its creation time). */
  at: Date;
  /** status.readyToUse: the snapshot exists and can be restored. */
  ready: boolean;
}

export interface RetentionPolicy {
  /** Keep at most this many per PVC. */
  keepLast?: number;
  /** Delete those older than this. */
  maxAgeMs?: number;
}

/**
 * Which of a schedule's snapshots retention deletes, PVC by PVC, newest first:
 * - a ready snapshot is kept while it is among the newest `keepLast` ready ones and younger than
 *   `maxAge` (each rule, when set, can delete it);
 * - the newest ready snapshot of a PVC is always kept: a schedule that stopped working (suspended,
 *   a failing class, a PVC gone) never leaves a PVC with no snapshot because of age alone;
 * - a snapshot that is not ready yet (in progress or failed) is kept while it is newer than the
 *   newest ready one, so an attempt in progress is never deleted and the last failure stays to
 *   be looked at, within `keepLast` and `maxAge` like the rest; older ones are deleted.
 * Only snapshots the schedule owns are ever passed here.
 */
export function retentionDeletes(
  snapshots: readonly RetainedSnapshot[],
  policy: RetentionPolicy,
  now: Date,
): RetainedSnapshot[] {
  const byPvc = new Map<string, RetainedSnapshot[]>();
  for (const s of snapshots) {
    const list = byPvc.get(s.pvc);
    if (list) list.push(s);
    else byPvc.set(s.pvc, [s]);
  }
  const young = (s: RetainedSnapshot): boolean =>
    policy.maxAgeMs === undefined || now.getTime() - s.at.getTime() <= policy.maxAgeMs;
  const within = (i: number): boolean => policy.keepLast === undefined || i < policy.keepLast;
  const deletes: RetainedSnapshot[] = [];
  for (const list of byPvc.values()) {
    const newestFirst = [...list].sort(
      (a, b) => b.at.getTime() - a.at.getTime() || (a.name < b.name ? 1 : -1),
    );
    const ready = newestFirst.filter((s) => s.ready);
    const pending = newestFirst.filter((s) => !s.ready);
    ready.forEach((s, i) => {
      if (i > 0 && !(within(i) && young(s))) deletes.push(s);
    });
    const newestReady = ready[0]?.at.getTime() ?? -Infinity;
    pending.forEach((s, i) => {
      if (!(s.at.getTime() > newestReady && within(i) && young(s))) deletes.push(s);
    });
  }
  return deletes;
}
