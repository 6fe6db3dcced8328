import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { EventRecorder } from "../cluster/index.js";
import { LocalEngine } from "../engine-api/index.js";
import { silentLogger } from "../log/index.js";
import { pointPinner } from "../operator/index.js";
import { ExportedPointPins } from "./exported-point-pins.js";
import { FakeKube } from "./fake-kube.testing.js";
import type { KubeVolumeSnapshotContent } from "./kube-api.js";

const DRIVER = "csi.snapblock.dev";
const MiB = 2 ** 20;

interface Recorded {
  kind: string;
  namespace: string;
  name: string;
  type: string;
  reason: string;
  message: string;
}

/**
 * Real pools in a temp dir (one LocalEngine per node, its point scheduler on a simulated clock,
 * ticking every 20 ms), pinned through the operator service's path (pointPinner over the nodes'
 * engines, as the controller wires it), and VolumeSnapshotContents in the fake API server.
 */
let dir: string;
let api: FakeKube;
let clock: { now: number };
let engines: Map<string, LocalEngine>;
let events: Recorded[];
let pinCalls: string[];

async function openNode(nodeId: string): Promise<LocalEngine> {
  const engine = new LocalEngine({
    nodeId,
    poolDir: join(dir, nodeId),
    createIfMissing: { sizeBytes: 64 * MiB },
    points: { tickMs: 20, now: () => clock.now },
  });
  await engine.open();
  engines.set(nodeId, engine);
  return engine;
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "snapblock-exported-pins-"));
  api = new FakeKube();
  clock = { now: Date.UTC(2026, 10, 30, 12, 0, 0) };
  engines = new Map();
  events = [];
  pinCalls = [];
});

afterEach(async () => {
  for (const e of engines.values()) await e.close().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

function reconciler(o: { recheckMs?: number } = {}): ExportedPointPins {
  const recorder: EventRecorder = {
    record: (e) =>
      events.push({
        kind: e.involved.kind,
        namespace: e.involved.namespace,
        name: e.involved.name,
        type: e.type,
        reason: e.reason,
        message: e.message,
      }),
  };
  const pinner = pointPinner({ engineFor: (id) => engines.get(id), logger: silentLogger });
  return new ExportedPointPins({
    api,
    driver: DRIVER,
    // The operator service's pinner, with its calls counted.
    points: { pointNode: (id) => pinner.pointNode(id), pin: (id) => (pinCalls.push(id), pinner.pin(id)) },
    events: recorder,
    logger: silentLogger,
    now: () => clock.now,
    ...o,
  });
}

function content(name: string, snapshotHandle: string, extra: Partial<KubeVolumeSnapshotContent> = {}): void {
  api.contents.set(name, {
    name,
    uid: `uid-${name}`,
    driver: DRIVER,
    snapshotHandle,
    deletionPolicy: "Retain",
    deleting: false,
    ...extra,
  });
}

/**
 * A protected volume "vol" on the node ("1s for 10s": every point older than 10 s is thinned),
 * once its scheduler has taken the first point (at once: a volume without points has one due).
 */
async function protectedVolume(engine: LocalEngine): Promise<void> {
  await engine.createVolume({ name: "vol", sizeBytes: MiB, meta: {} });
  await engine.setProtection("vol", "1s for 10s");
  await vi.waitFor(async () => expect(await points(engine)).toHaveLength(1), { timeout: 5000, interval: 20 });
}

async function points(engine: LocalEngine): Promise<Array<{ id: string; pinned: boolean }>> {
  const { items } = await engine.listSnapshots();
  return items
    .filter((s) => s.name.startsWith("rp--") && s.sourceVolume === "vol")
    .sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime())
    .map((s) => ({ id: `${engine.nodeId}/${s.name}`, pinned: s.pinned === true }));
}

/** Whether a point is pinned; undefined when it is gone. */
async function pinned(engine: LocalEngine, id: string): Promise<boolean | undefined> {
  return (await points(engine)).find((p) => p.id === id)?.pinned;
}

/** Writes to the volume, moves the clock on by `ms`, and waits for the scheduler's next point. */
async function nextPoint(engine: LocalEngine, ms = 1000): Promise<string> {
  const before = new Set((await points(engine)).map((p) => p.id));
  const device = engine.openVolumeDevice("vol");
  try {
    await device.write(0, Buffer.alloc(4096, before.size + 1));
  } finally {
    device.close();
  }
  clock.now += ms;
  let made = "";
  await vi.waitFor(
    async () => {
      const fresh = (await points(engine)).filter((p) => !before.has(p.id));
      expect(fresh).toHaveLength(1);
      made = fresh[0]!.id;
    },
    { timeout: 5000, interval: 20 },
  );
  return made;
}

describe("ExportedPointPins", () => {
  it("pins the point a hand-written VolumeSnapshotContent names, and thinning past the policy leaves it", async () => {
    const node = await openNode("node-a");
    await protectedVolume(node);
    const first = await nextPoint(node);
    const second = await nextPoint(node);
    await nextPoint(node);
    content("by-hand", first);

    const pass = await reconciler().reconcileAll();
    expect(pass).toEqual({ pinned: ["by-hand"], missing: [], failed: [], unchanged: 0 });
    expect(await points(node)).toContainEqual({ id: first, pinned: true });
    expect(await points(node)).toContainEqual({ id: second, pinned: false });

    // A minute later (six windows of the policy): the policy keeps only the newest point; the
    // pinned one stays besides, the unpinned ones of its time are gone.
    const newest = await nextPoint(node, 60_000);
    await vi.waitFor(async () => expect((await points(node)).map((p) => p.id)).toEqual([first, newest]), {
      timeout: 5000,
      interval: 20,
    });
    expect(await points(node)).toEqual([
      { id: first, pinned: true },
      { id: newest, pinned: false },
    ]);
    expect(events).toEqual([]);
  });

  it("leaves contents of another driver, of user snapshots, without a handle or being deleted alone", async () => {
    const node = await openNode("node-a");
    await protectedVolume(node);
    const point = await nextPoint(node);
    await node.createSnapshot({ volume: "vol", name: "snap-1", meta: {} });
    content("other-driver", point, { driver: "other.csi.example.com" });
    content("user-snapshot", "node-a/snap-1");
    content("dynamic", "", { snapshotHandle: undefined });
    content("deleting", point, { deleting: true });
    content("not-an-id", "rp--vol-1");

    const pass = await reconciler().reconcileAll();
    expect(pass).toEqual({ pinned: [], missing: [], failed: [], unchanged: 0 });
    expect(pinCalls).toEqual([]);
    expect((await points(node)).some((p) => p.pinned)).toBe(false);
    expect((await node.getSnapshot("snap-1"))?.pinned ?? false).toBe(false);
    expect(events).toEqual([]);
  });

  it("a content whose point is gone gets one Warning Event (per leader), and the others are still pinned", async () => {
    const node = await openNode("node-a");
    await protectedVolume(node);
    const gone = await nextPoint(node);
    const kept = await nextPoint(node);
    await node.deleteSnapshot(gone.slice("node-a/".length));
    content("a-gone", gone);
    content("b-kept", kept);
    content("c-never", "node-a/rp--vol-1000");

    const r = reconciler({ recheckMs: 0 });
    const pass = await r.reconcileAll();
    expect(pass).toEqual({ pinned: ["b-kept"], missing: ["a-gone", "c-never"], failed: [], unchanged: 0 });
    expect(await pinned(node, kept)).toBe(true);
    expect(await pinned(node, gone)).toBeUndefined();
    expect(events).toHaveLength(2);
    expect(events[0]).toMatchObject({
      kind: "VolumeSnapshotContent",
      namespace: "",
      name: "a-gone",
      type: "Warning",
      reason: "RecoveryPointMissing",
    });
    expect(events[0]!.message).toContain(`recovery point ${gone} no longer exists`);
    expect(events[1]).toMatchObject({ name: "c-never", reason: "RecoveryPointMissing" });

    // Asked again (recheck 0): still missing, no second Event; a new leader reports it once more.
    expect((await r.reconcileAll()).missing).toEqual(["a-gone", "c-never"]);
    expect(events).toHaveLength(2);
    await reconciler().reconcileAll();
    expect(events.map((e) => e.name)).toEqual(["a-gone", "c-never", "a-gone", "c-never"]);
  });

  it("repeated passes are idempotent and ask no node until the recheck; a point unpinned by hand is pinned again then", async () => {
    const node = await openNode("node-a");
    await protectedVolume(node);
    const point = await nextPoint(node);
    content("exported", point);
    const r = reconciler({ recheckMs: 60_000 });

    expect((await r.reconcileAll()).pinned).toEqual(["exported"]);
    for (let i = 0; i < 3; i++) {
      expect(await r.reconcileAll()).toEqual({ pinned: [], missing: [], failed: [], unchanged: 1 });
    }
    expect(pinCalls).toEqual([point]);
    expect(api.calls.filter((c) => c === "listVolumeSnapshotContents")).toHaveLength(4);
    expect(await pinned(node, point)).toBe(true);

    // Already pinned (by the CLI, or an earlier leader): pinning again changes nothing.
    await reconciler().reconcileAll();
    expect(await pinned(node, point)).toBe(true);

    // Unpinned by hand while the content still names it: pinned again at the recheck.
    await node.pinPoint(point.slice("node-a/".length), false);
    clock.now += 60_000;
    expect((await r.reconcileAll()).pinned).toEqual(["exported"]);
    expect(await pinned(node, point)).toBe(true);

    // Two passes at once share one.
    const [a, b] = await Promise.all([r.reconcileAll(), r.reconcileAll()]);
    expect(a).toBe(b);
    expect(events).toEqual([]);
  });

  it("a node that is down is tried again next pass (its other points wait), the others are pinned meanwhile", async () => {
    const a = await openNode("node-a");
    const b = await openNode("node-b");
    await protectedVolume(a);
    await protectedVolume(b);
    const onA = await nextPoint(a);
    const onB1 = await nextPoint(b);
    const onB2 = await nextPoint(b);
    await b.close(); // node-b down: its engine answers CLOSED
    content("b1", onB1);
    content("b2", onB2);
    content("on-a", onA);
    const r = reconciler();

    const down = await r.reconcileAll();
    expect(down).toEqual({ pinned: ["on-a"], missing: [], failed: ["b1", "b2"], unchanged: 0 });
    expect(pinCalls).toEqual([onB1, onA]); // b2 not asked: its node already failed this pass
    expect(events).toEqual([]);

    // node-b back (a new process on the same pool): the next pass pins its points.
    const back = await openNode("node-b");
    const up = await r.reconcileAll();
    expect(up).toEqual({ pinned: ["b1", "b2"], missing: [], failed: [], unchanged: 1 });
    expect(await pinned(back, onB1)).toBe(true);
    expect(await pinned(back, onB2)).toBe(true);
  });

  it("an API server that cannot be reached fails the pass, not the reconciler; the next pass works", async () => {
    const node = await openNode("node-a");
    await protectedVolume(node);
    const point = await nextPoint(node);
    content("exported", point);
    const r = reconciler();
    api.failing.add("listVolumeSnapshotContents");
    await expect(r.reconcileAll()).rejects.toMatchObject({ code: "CLOSED" });
    api.failing.delete("listVolumeSnapshotContents");
    expect((await r.reconcileAll()).pinned).toEqual(["exported"]);

    // The loop started by start() makes its first pass at once and keeps going after a failure.
    await node.pinPoint(point.slice("node-a/".length), false);
    const looping = new ExportedPointPins({
      api,
      driver: DRIVER,
      points: pointPinner({ engineFor: (id) => engines.get(id), logger: silentLogger }),
      events: { record: () => undefined },
      logger: silentLogger,
      pollMs: 20,
    });
    api.failing.add("listVolumeSnapshotContents");
    looping.start();
    try {
      await vi.waitFor(() =>
        expect(api.calls.filter((c) => c === "listVolumeSnapshotContents").length).toBeGreaterThan(4),
      );
      api.failing.delete("listVolumeSnapshotContents");
      await vi.waitFor(async () => expect(await pinned(node, point)).toBe(true), {
        timeout: 5000,
        interval: 20,
      });
    } finally {
      looping.stop();
    }
  });
});
