import { describe, expect, it } from "vitest";
import { SnapblockError } from "../errors/index.js";
import { FakeKube } from "./fake-kube.testing.js";
import { KubeEventRecorder } from "./kube-events.js";
import { KubernetesNodeDiscovery } from "./kube-node-discovery.js";
import { LeaseElection } from "./lease-election.js";
import { ANNOTATION, NodeAnnouncer, readAnnouncement } from "./node-announcement.js";
import { silentLogger } from "../log/index.js";
import { pvcOf, volumeSnapshotOf } from "../cluster/index.js";

const capacity = (available: number) => () =>
  Promise.resolve({
    totalBytes: 100,
    freeBytes: available,
    provisionedBytes: 100 - available,
    availableBytes: available,
    maxVolumeBytes: 1000,
  });

describe("node announcement and Kubernetes node discovery", () => {
  it("a node plugin publishes its endpoint and capacity; the controller discovers it", async () => {
    const api = new FakeKube();
    for (const name of ["node-a", "node-b", "plain"])
      api.nodes.set(name, { name, annotations: {}, labels: {} });
    let now = new Date("2026-01-01T00:00:00Z");
    for (const [n, addr] of [
      ["node-a", "10.0.0.1:7443"],
      ["node-b", "10.0.0.2:7443"],
    ] as const) {
      await new NodeAnnouncer({
        api,
        nodeId: n,
        endpoint: addr,
        capacity: capacity(40),
        logger: silentLogger,
        now: () => now,
      }).announce();
    }
    expect(api.nodes.get("node-a")!.annotations).toEqual({
      [ANNOTATION.endpoint]: "10.0.0.1:7443",
      [ANNOTATION.capacityBytes]: "100",
      [ANNOTATION.availableBytes]: "40",
      [ANNOTATION.heartbeat]: "2026-01-01T00:00:00.000Z",
    });
    const discovery = new KubernetesNodeDiscovery({ api, staleAfterMs: 60_000, now: () => now });
    expect(await discovery.nodes()).toEqual([
      { nodeId: "node-a", address: "10.0.0.1:7443" },
      { nodeId: "node-b", address: "10.0.0.2:7443" },
    ]);
    expect(discovery.announcements()[0]).toMatchObject({ capacityBytes: 100, availableBytes: 40 });
    // node-b stops announcing: after staleAfterMs it is no longer offered for placement.
    now = new Date("2026-01-01T00:05:00Z");
    await new NodeAnnouncer({
      api,
      nodeId: "node-a",
      endpoint: "10.0.0.9:7443",
      capacity: capacity(30),
      logger: silentLogger,
      now: () => now,
    }).announce();
    expect(await discovery.nodes()).toEqual([{ nodeId: "node-a", address: "10.0.0.9:7443" }]);
  });

  it("ignores malformed figures rather than trusting them", () => {
    const a = readAnnouncement({
      name: "n",
      labels: {},
      annotations: {
        [ANNOTATION.endpoint]: "h:1",
        [ANNOTATION.availableBytes]: "-5",
        [ANNOTATION.heartbeat]: "soon",
      },
    });
    expect(a).toEqual({ nodeId: "n", address: "h:1" });
    expect(readAnnouncement({ name: "n", labels: {}, annotations: {} })).toBeUndefined();
  });

  it("a failing announcement is retried, not fatal", async () => {
    const api = new FakeKube(); // the Node does not exist: patch fails
    const announcer = new NodeAnnouncer({
      api,
      nodeId: "ghost",
      endpoint: "h:1",
      capacity: capacity(1),
      intervalMs: 60_000,
      logger: silentLogger,
    });
    await expect(announcer.start()).resolves.toBeUndefined();
    announcer.stop();
  });
});

describe("Lease leader election", () => {
  const elector = (api: FakeKube, identity: string, clock: { t: number }, events: string[] = []) =>
    new LeaseElection({
      api,
      namespace: "kube-system",
      name: "snapblock-controller",
      identity,
      leaseDurationMs: 15_000,
      logger: silentLogger,
      now: () => new Date(clock.t),
      onStartedLeading: () => events.push(`${identity} leads`),
      onStoppedLeading: () => events.push(`${identity} stops`),
    });

  it("one replica leads; the other takes over only after the lease expires", async () => {
    const api = new FakeKube();
    const clock = { t: 1_000_000 };
    const events: string[] = [];
    const a = elector(api, "pod-a", clock, events);
    const b = elector(api, "pod-b", clock, events);
    expect(await a.tryAcquireOrRenew()).toBe(true);
    expect(await b.tryAcquireOrRenew()).toBe(false);
    clock.t += 10_000;
    expect(await a.tryAcquireOrRenew()).toBe(true); // renewed
    clock.t += 10_000;
    expect(await b.tryAcquireOrRenew()).toBe(false); // a renewed 10 s ago: still valid
    // a stops renewing (crashed): 15 s after its last renewal b takes over.
    clock.t += 6_000;
    expect(await b.tryAcquireOrRenew()).toBe(true);
    const lease = api.leases.get("kube-system/snapblock-controller")!;
    expect(lease).toMatchObject({ holderIdentity: "pod-b", leaseTransitions: 1, leaseDurationSeconds: 15 });
    // a comes back: it sees b's lease and steps down.
    expect(await a.tryAcquireOrRenew()).toBe(false);
    expect(events).toEqual(["pod-a leads", "pod-b leads", "pod-a stops"]);
  });

  it("two replicas racing for an expired lease: exactly one wins", async () => {
    const api = new FakeKube();
    const clock = { t: 5_000_000 };
    await api.createLease({
      name: "snapblock-controller",
      namespace: "kube-system",
      holderIdentity: "old",
      leaseDurationSeconds: 15,
      renewTime: new Date(clock.t - 60_000),
    });
    const a = elector(api, "pod-a", clock);
    const b = elector(api, "pod-b", clock);
    const results = await Promise.all([a.tryAcquireOrRenew(), b.tryAcquireOrRenew()]);
    expect(results.filter(Boolean)).toHaveLength(1);
  });

  it("a leader that cannot renew steps down within one lease duration; stop() releases the lease", async () => {
    const api = new FakeKube();
    const clock = { t: 9_000_000 };
    const a = elector(api, "pod-a", clock);
    expect(await a.tryAcquireOrRenew()).toBe(true);
    const realGet = api.getLease;
    api.getLease = () => Promise.reject(new SnapblockError("CLOSED", "api down"));
    clock.t += 5_000;
    expect(await a.tryAcquireOrRenew()).toBe(true); // still within its own lease
    clock.t += 11_000;
    expect(await a.tryAcquireOrRenew()).toBe(false);
    api.getLease = realGet;
    expect(await a.tryAcquireOrRenew()).toBe(true);
    await a.stop();
    expect(api.leases.get("kube-system/snapblock-controller")!.holderIdentity).toBe("");
    const b = elector(api, "pod-b", clock);
    expect(await b.tryAcquireOrRenew()).toBe(true); // no need to wait for expiry
  });
});

describe("Kubernetes Events", () => {
  it("records on the PVC or VolumeSnapshot, cuts long messages, and never throws", async () => {
    const api = new FakeKube();
    const recorder = new KubeEventRecorder({ api, source: "snapblock-controller", logger: silentLogger });
    const pvc = pvcOf({ "csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "app" })!;
    recorder.record({ involved: pvc, type: "Warning", reason: "PlacementFailed", message: "x".repeat(5000) });
    await recorder.flush();
    expect(api.events[0]).toMatchObject({
      involved: { kind: "PersistentVolumeClaim", namespace: "app", name: "data" },
      type: "Warning",
      reason: "PlacementFailed",
      source: "snapblock-controller",
    });
    expect(api.events[0]!.message.length).toBe(1024);
    api.failEvents = true;
    recorder.record({ involved: pvc, type: "Normal", reason: "CopyStarted", message: "copying" });
    await expect(recorder.flush()).resolves.toBeUndefined();
    expect(
      volumeSnapshotOf({
        "csi.storage.k8s.io/volumesnapshot/name": "s",
        "csi.storage.k8s.io/volumesnapshot/namespace": "app",
      }),
    ).toMatchObject({ kind: "VolumeSnapshot", name: "s" });
    expect(pvcOf({})).toBeUndefined();
  });
});
