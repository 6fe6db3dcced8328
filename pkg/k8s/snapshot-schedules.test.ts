import { describe, expect, it } from "vitest";
import type { EventRecorder } from "../cluster/index.js";
import { silentLogger } from "../log/index.js";
import { FakeKube } from "./fake-kube.testing.js";
import type { KubeSnapshotSchedule } from "./kube-api.js";
import { retentionDeletes } from "./schedule-retention.js";
import {
  SCHEDULE_LABEL,
  parseDuration,
  parseScheduleSpec,
  scheduledSnapshotName,
} from "./snapshot-schedule-spec.js";
import { SnapshotSchedules } from "./snapshot-schedules.js";

const T = (iso: string) => new Date(`2026-01-01T${iso}Z`);

interface Recorded {
  reason: string;
  type: string;
  message: string;
  name: string;
}

/** The fake API server, a simulated clock, and a reconciler whose Events are collected. */
function world(spec: Record<string, unknown>, createdAt = T("10:15:00")) {
  const api = new FakeKube();
  const clock = { now: createdAt };
  api.now = () => clock.now;
  const events: Recorded[] = [];
  const recorder: EventRecorder = {
    record: (e) => events.push({ reason: e.reason, type: e.type, message: e.message, name: e.involved.name }),
  };
  const schedule: KubeSnapshotSchedule = {
    namespace: "app",
    name: "hourly",
    uid: "sched-uid-1",
    generation: 1,
    creationTimestamp: createdAt,
    spec,
  };
  api.schedules.set("app/hourly", schedule);
  const pvc = (name: string, labels: Record<string, string>, phase = "Bound") =>
    api.pvcs.set(`app/${name}`, {
      namespace: "app",
      name,
      uid: `pvc-${name}`,
      labels,
      phase,
      deleting: false,
    });
  pvc("db-0", { app: "db" });
  pvc("db-1", { app: "db" });
  pvc("db-pending", { app: "db" }, "Pending");
  pvc("web", { app: "web" });
  api.pvcs.set("other/db-0", {
    namespace: "other",
    name: "db-0",
    uid: "x",
    labels: { app: "db" },
    phase: "Bound",
    deleting: false,
  });
  const reconciler = () =>
    new SnapshotSchedules({ api, logger: silentLogger, events: recorder, now: () => clock.now });
  /** The snapshot controller: every snapshot becomes ready. */
  const snapshotsReady = () => {
    for (const s of api.snapshots.values()) s.readyToUse = true;
  };
  const names = () => [...api.snapshots.values()].map((s) => s.name).sort();
  return {
    api,
    clock,
    events,
    schedule: () => api.schedules.get("app/hourly")!,
    reconciler,
    snapshotsReady,
    names,
    pvc,
  };
}

const HOURLY = {
  schedule: "0 * * * *",
  selector: { matchLabels: { app: "db" } },
  volumeSnapshotClassName: "snapblock",
  retention: { keepLast: 3 },
};

describe("SnapshotSchedule reconciler", () => {
  it("creates one VolumeSnapshot per selected bound PVC at each scheduled time, owned and labelled", async () => {
    const w = world(HOURLY);
    const r = w.reconciler();
    w.clock.now = T("10:30:00");
    await r.reconcileAll();
    expect(w.names()).toEqual([]); // 10:00 came before the schedule existed
    expect(w.schedule().status).toMatchObject({
      nextSnapshotTime: "2026-01-01T11:00:00.000Z",
      selectedPVCs: 2,
      snapshotCount: 0,
      lastError: "",
      observedGeneration: 1,
    });
    w.clock.now = T("11:00:02");
    const [outcome] = await r.reconcileAll();
    expect(outcome!.created).toEqual(["db-0-hourly-202601011100", "db-1-hourly-202601011100"]);
    expect(w.names()).toEqual(["db-0-hourly-202601011100", "db-1-hourly-202601011100"]);
    const made = w.api.snapshots.get("app/db-0-hourly-202601011100")!;
    expect(made).toMatchObject({
      pvcName: "db-0",
      className: "snapblock",
      labels: { [SCHEDULE_LABEL]: "hourly", "snapblock.dev/pvc": "db-0" },
      annotations: { "snapblock.dev/pvc": "db-0", "snapblock.dev/scheduled-at": "2026-01-01T11:00:00.000Z" },
      ownerReferences: [
        {
          apiVersion: "snapblock.dev/v1alpha1",
          kind: "SnapshotSchedule",
          name: "hourly",
          uid: "sched-uid-1",
          controller: true,
        },
      ],
    });
    expect(w.schedule().status).toMatchObject({
      lastScheduleTime: "2026-01-01T11:00:00.000Z",
      lastSnapshotTime: "2026-01-01T11:00:02.000Z",
      nextSnapshotTime: "2026-01-01T12:00:00.000Z",
      snapshotCount: 2,
    });
    expect(w.events).toEqual([
      expect.objectContaining({ reason: "SnapshotsCreated", type: "Normal", name: "hourly" }),
    ]);
    // Polled again within the same hour: nothing more.
    w.clock.now = T("11:00:40");
    await r.reconcileAll();
    expect(w.names()).toHaveLength(2);
    expect(w.api.calls.filter((c) => c === "createVolumeSnapshot")).toHaveLength(2);
  });

  it("does not duplicate after a restart, even when the status was lost", async () => {
    const w = world(HOURLY);
    w.clock.now = T("11:00:01");
    await w.reconciler().reconcileAll();
    expect(w.names()).toHaveLength(2);
    // A new controller (a restart, another leader): the status says 11:00 is done.
    w.clock.now = T("11:20:00");
    await w.reconciler().reconcileAll();
    expect(w.names()).toHaveLength(2);
    // And with no status at all, the deterministic names find what exists: no duplicate either.
    delete w.schedule().status;
    await w.reconciler().reconcileAll();
    expect(w.names()).toHaveLength(2);
    expect(w.api.calls.filter((c) => c === "createVolumeSnapshot")).toHaveLength(2);
    expect(w.schedule().status).toMatchObject({
      lastScheduleTime: "2026-01-01T11:00:00.000Z",
      lastError: "",
    });
  });

  it("keeps the last N per PVC and deletes only its own snapshots", async () => {
    const w = world(HOURLY);
    const r = w.reconciler();
    // A user's snapshot carrying the schedule's label, and one owned by another schedule.
    await w.api.createVolumeSnapshot({
      namespace: "app",
      name: "db-0-manual",
      labels: { [SCHEDULE_LABEL]: "hourly" },
      annotations: {},
      ownerReferences: [],
      pvcName: "db-0",
    });
    await w.api.createVolumeSnapshot({
      namespace: "app",
      name: "db-0-old-schedule",
      labels: { [SCHEDULE_LABEL]: "hourly" },
      annotations: { "snapblock.dev/pvc": "db-0", "snapblock.dev/scheduled-at": "2025-01-01T00:00:00.000Z" },
      ownerReferences: [
        {
          apiVersion: "snapblock.dev/v1alpha1",
          kind: "SnapshotSchedule",
          name: "hourly",
          uid: "gone",
          controller: true,
        },
      ],
      pvcName: "db-0",
    });
    for (const hour of ["11", "12", "13", "14", "15"]) {
      w.clock.now = T(`${hour}:00:05`);
      await r.reconcileAll();
      w.snapshotsReady();
    }
    w.clock.now = T("15:30:00");
    await r.reconcileAll();
    expect(w.names()).toEqual([
      "db-0-hourly-202601011300",
      "db-0-hourly-202601011400",
      "db-0-hourly-202601011500",
      "db-0-manual",
      "db-0-old-schedule",
      "db-1-hourly-202601011300",
      "db-1-hourly-202601011400",
      "db-1-hourly-202601011500",
    ]);
    expect(w.schedule().status).toMatchObject({ snapshotCount: 6 });
    const deletions = w.events.filter((e) => e.reason === "SnapshotsDeleted");
    expect(deletions.map((e) => e.message)).toEqual([
      "retention deleted 2 VolumeSnapshot(s): db-0-hourly-202601011100, db-1-hourly-202601011100",
      "retention deleted 2 VolumeSnapshot(s): db-0-hourly-202601011200, db-1-hourly-202601011200",
    ]);
  });

  it("deletes by age, but keeps each PVC's newest ready snapshot, even of a PVC that disappeared", async () => {
    const w = world({ ...HOURLY, retention: { maxAge: "2h" } });
    const r = w.reconciler();
    for (const hour of ["11", "12", "13"]) {
      w.clock.now = T(`${hour}:00:05`);
      await r.reconcileAll();
      w.snapshotsReady();
    }
    // db-1 goes away: no more snapshots of it, but its last one stays, however old it gets.
    w.api.pvcs.delete("app/db-1");
    for (const hour of ["14", "15", "16", "17", "18"]) {
      w.clock.now = T(`${hour}:00:05`);
      await r.reconcileAll();
      w.snapshotsReady();
    }
    // At 18:00:05 the 16:00 snapshot is 2h and 5s old.
    expect(w.names()).toEqual([
      "db-0-hourly-202601011700",
      "db-0-hourly-202601011800",
      "db-1-hourly-202601011300",
    ]);
    expect(w.schedule().status).toMatchObject({ selectedPVCs: 1, snapshotCount: 3, lastError: "" });
  });

  it("a bad cron expression is a status error and one Warning Event, never a crash; others go on", async () => {
    const w = world({ ...HOURLY, schedule: "61 * * * *" });
    w.api.schedules.set("app/good", {
      namespace: "app",
      name: "good",
      uid: "sched-uid-2",
      generation: 3,
      creationTimestamp: T("09:00:00"),
      spec: { ...HOURLY, selector: { matchLabels: { app: "web" } } },
    });
    const r = w.reconciler();
    w.clock.now = T("11:00:05");
    const outcomes = await r.reconcileAll();
    await r.reconcileAll(); // the same error again: no second Event
    expect(outcomes.map((o) => [o.schedule, o.errors.length])).toEqual([
      ["app/hourly", 1],
      ["app/good", 0],
    ]);
    expect(w.schedule().status?.lastError).toMatch(
      /spec\.schedule "61 \* \* \* \*" is not a five-field cron expression/,
    );
    expect(w.schedule().status?.nextSnapshotTime).toBeUndefined();
    expect(w.events.filter((e) => e.type === "Warning")).toEqual([
      expect.objectContaining({ reason: "InvalidSchedule", name: "hourly" }),
    ]);
    expect(w.names()).toEqual(["web-good-202601011100"]);
    // Fixed: the error clears and the schedule runs.
    w.schedule().spec = HOURLY;
    w.clock.now = T("12:00:05");
    await r.reconcileAll();
    expect(w.schedule().status?.lastError).toBe("");
    expect(w.names()).toContain("db-0-hourly-202601011200");
  });

  it("a failed create is retried on the next pass without duplicating what succeeded", async () => {
    const w = world(HOURLY);
    const r = w.reconciler();
    w.clock.now = T("11:00:05");
    w.api.failing.add("createVolumeSnapshot");
    await r.reconcileAll();
    expect(w.schedule().status?.lastError).toMatch(
      /creating VolumeSnapshot db-0-hourly-202601011100 of PVC db-0/,
    );
    expect(w.schedule().status?.lastScheduleTime).toBeUndefined();
    expect(w.events.filter((e) => e.type === "Warning").map((e) => e.reason)).toEqual([
      "SnapshotScheduleFailed",
    ]);
    w.api.failing.clear();
    w.clock.now = T("11:00:35");
    await r.reconcileAll();
    expect(w.names()).toEqual(["db-0-hourly-202601011100", "db-1-hourly-202601011100"]);
    expect(w.schedule().status).toMatchObject({
      lastError: "",
      lastScheduleTime: "2026-01-01T11:00:00.000Z",
    });
  });

  it("after a downtime takes only the latest missed time; suspended, it does nothing", async () => {
    const w = world(HOURLY);
    const r = w.reconciler();
    w.clock.now = T("14:20:00");
    await r.reconcileAll();
    expect(w.names()).toEqual(["db-0-hourly-202601011400", "db-1-hourly-202601011400"]);
    w.snapshotsReady();
    w.schedule().spec = { ...HOURLY, suspend: true, retention: { keepLast: 1, maxAge: "1m" } };
    w.clock.now = T("18:00:05");
    await r.reconcileAll();
    expect(w.names()).toHaveLength(2);
    expect(w.schedule().status?.nextSnapshotTime).toBeUndefined();
  });
});

describe("schedule spec", () => {
  it("says every problem at once", () => {
    expect(() =>
      parseScheduleSpec({
        schedule: "* * *",
        timeZone: "Mars/Base",
        selector: { matchExpressions: [{ key: "a", operator: "Near" }] },
      }),
    ).toThrow(
      /timeZone "Mars\/Base".*selector\.matchExpressions\[0\]\.operator "Near".*retention needs keepLast or maxAge/,
    );
    expect(() =>
      parseScheduleSpec({ schedule: "0 * * * *", selector: {}, retention: { keepLast: 0 } }),
    ).toThrow(/keepLast must be a whole number >= 1/);
    expect(
      parseScheduleSpec({
        schedule: "30 2 * * 1",
        timeZone: "Europe/Paris",
        selector: {},
        retention: { maxAge: "2w" },
      }),
    ).toMatchObject({
      timeZone: "Europe/Paris",
      maxAgeMs: 14 * 86_400_000,
      suspend: false,
    });
  });

  it("reads durations and makes names that fit", () => {
    expect(parseDuration("1h30m")).toBe(90 * 60_000);
    expect(parseDuration("7d")).toBe(7 * 86_400_000);
    for (const bad of ["", "7", "1.5h", "0h", "-1h", "h"]) expect(parseDuration(bad)).toBeUndefined();
    const long = scheduledSnapshotName("p".repeat(200), "s".repeat(100), T("01:02:00"));
    expect(long.length).toBeLessThanOrEqual(253);
    expect(long).toMatch(/-[0-9a-f]{10}-202601010102$/);
    expect(scheduledSnapshotName("p".repeat(200), "s".repeat(100), T("01:02:00"))).toBe(long);
    expect(scheduledSnapshotName("p".repeat(200), "s".repeat(101), T("01:02:00"))).not.toBe(long);
  });

  it("retention never deletes an attempt newer than the newest ready snapshot", () => {
    const at = (h: number) => new Date(Date.UTC(2026, 0, 1, h));
    const snaps = [
      { name: "a1", pvc: "a", at: at(1), ready: true },
      { name: "a2", pvc: "a", at: at(2), ready: false }, // failed, older than a ready one
      { name: "a3", pvc: "a", at: at(3), ready: true },
      { name: "a4", pvc: "a", at: at(4), ready: false }, // in progress
    ];
    expect(retentionDeletes(snaps, { keepLast: 1 }, at(5)).map((s) => s.name)).toEqual(["a1", "a2"]);
    expect(
      retentionDeletes(snaps, { maxAgeMs: 1 }, at(9))
        .map((s) => s.name)
        .sort(),
    ).toEqual(["a1", "a2", "a4"]);
  });
});
