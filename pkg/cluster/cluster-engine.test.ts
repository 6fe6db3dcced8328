import { describe, expect, it } from "vitest";
import { SnapblockError, isSnapblockError } from "../errors/index.js";
import { ClusterEngine, type NodeEngine } from "./cluster-engine.js";
import { StaticNodeDiscovery, parseNodeList } from "./node-discovery.js";
import { rankByRendezvous } from "./rendezvous-hashing.js";
import { silentLogger } from "../log/index.js";
import { toGrpcStatus } from "../rpc/index.js";
import type {
  EngineApi,
  EngineBlockMetadataRequest,
  EngineCapacity,
  EngineSnapshot,
  EngineSpace,
  EngineTombstone,
  EngineVolume,
} from "../engine-api/index.js";

const GiB = 2 ** 30;

/** An in-memory node engine with a settable capacity and an off switch. */
class FakeNode implements NodeEngine {
  volumes = new Map<string, EngineVolume>();
  snapshots = new Map<string, EngineSnapshot>();
  down = false;
  closed = false;
  private nextId = 1;
  constructor(
    readonly nodeId: string,
    public availableBytes: number,
  ) {}
  private up(): Promise<void> {
    return this.down
      ? Promise.reject(
          new SnapblockError("CLOSED", `node ${this.nodeId} (engine service at x) is unavailable`),
        )
      : Promise.resolve();
  }
  isReady = () => !this.down;
  close = () => void (this.closed = true);
  async createVolume(o: { name: string; sizeBytes: number }): Promise<EngineVolume> {
    await this.up();
    const v = { name: o.name, id: this.nextId++, sizeBytes: o.sizeBytes, createdAt: new Date(), meta: {} };
    this.volumes.set(o.name, v);
    return v;
  }
  getVolume = async (n: string) => (await this.up(), this.volumes.get(n));
  listVolumes = async () => (
    await this.up(),
    { items: [...this.volumes.values()], idWatermark: this.nextId }
  );
  resizeVolume = (): Promise<EngineVolume> => Promise.reject(new SnapblockError("INTERNAL", "unused"));
  setProtection = (): Promise<EngineVolume> => Promise.reject(new SnapblockError("INTERNAL", "unused"));
  deleteVolume = async (n: string) => void (await this.up(), this.volumes.delete(n));
  async createSnapshot(o: { volume: string; name: string }): Promise<EngineSnapshot> {
    await this.up();
    const s = {
      name: o.name,
      id: this.nextId++,
      sizeBytes: 1,
      createdAt: new Date(),
      sourceVolume: o.volume,
      meta: {},
    };
    this.snapshots.set(o.name, s);
    return s;
  }
  getSnapshot = async (n: string) => (await this.up(), this.snapshots.get(n));
  listSnapshots = async () => (
    await this.up(),
    { items: [...this.snapshots.values()], idWatermark: this.nextId }
  );
  deleteSnapshot = async (n: string) => void (await this.up(), this.snapshots.delete(n));
  pinPoint = async (n: string, pinned: boolean): Promise<EngineSnapshot> => {
    await this.up();
    const s = this.snapshots.get(n);
    if (!s) throw new SnapblockError("NOT_FOUND", `no point ${n} on ${this.nodeId}`);
    s.pinned = pinned;
    return s;
  };
  capacity = async (): Promise<EngineCapacity> => {
    await this.up();
    return {
      totalBytes: 100 * GiB,
      freeBytes: this.availableBytes,
      provisionedBytes: 0,
      availableBytes: this.availableBytes,
      maxVolumeBytes: 2 ** 50,
    };
  };
  /** One range per page naming this node in its offset (which node answered). */
  blockMetadata = async function* (this: FakeNode, r: EngineBlockMetadataRequest) {
    await this.up();
    const s = this.snapshots.get(r.snapshot);
    if (!s) throw new SnapblockError("NOT_FOUND", `no snapshot ${r.snapshot} on ${this.nodeId}`);
    yield { sizeBytes: s.sizeBytes, ranges: [{ offset: this.nodeId.charCodeAt(0), length: 1 }] };
  };
  space = async (): Promise<EngineSpace> => {
    await this.up();
    const pool = {
      totalBytes: 100 * GiB,
      allocatedBytes: 100 * GiB - this.availableBytes,
      freeBytes: this.availableBytes,
      provisionedBytes: 0,
      overcommitRatio: 1,
      reclaimableBytes: 0,
      copyReservedBytes: 0,
      sharedBytes: 0,
      chunkSize: 65536,
    };
    return { pool, volumes: [], snapshots: [] };
  };
  // Group snapshots: not used by these tests (tested end to end with real processes).
  createSnapshotGroup = (): Promise<EngineSnapshot[]> =>
    Promise.reject(new SnapblockError("INTERNAL", "unused"));
  holdWrites = (): Promise<{ holdId: string }> => Promise.reject(new SnapblockError("INTERNAL", "unused"));
  releaseWrites = () => Promise.resolve({ heldThroughout: false });
  putGroupRecord = (): Promise<void> => Promise.reject(new SnapblockError("INTERNAL", "unused"));
  getGroupRecord = (): Promise<Record<string, string> | undefined> => Promise.resolve(undefined);
  deleteGroupRecord = (): Promise<void> => Promise.resolve();
  engineFor = (id: string) => (id === this.nodeId ? this : undefined);
  nodeEngines = () => [this];
  placeVolume = () => Promise.resolve(this);
  // Replication: what the controller asked for, recorded (the real calls are tested end to end).
  grants: string[] = [];
  tombstones: EngineTombstone[] = [];
  replicateSnapshot = (): Promise<EngineSnapshot> => Promise.reject(new SnapblockError("INTERNAL", "unused"));
  setHolders = (): Promise<void> => Promise.resolve();
  grantPull = async (name: string, node: string) =>
    void (await this.up(), this.grants.push(`${name}@${node}`));
  addTombstones = async (t: EngineTombstone[]) => void (await this.up(), this.tombstones.push(...t));
  listTombstones = async () => (await this.up(), [...this.tombstones]);
}

async function cluster(
  free: Record<string, number>,
): Promise<{ engine: ClusterEngine; nodes: Map<string, FakeNode> }> {
  const nodes = new Map(Object.entries(free).map(([id, bytes]) => [id, new FakeNode(id, bytes)]));
  const engine = new ClusterEngine({
    discovery: new StaticNodeDiscovery(
      [...nodes.keys()].map((nodeId) => ({ nodeId, address: `${nodeId}:7443` })),
    ),
    connect: (ep) => nodes.get(ep.nodeId)!,
    logger: silentLogger,
  });
  expect(engine.isReady()).toBe(false);
  await engine.refresh();
  expect(engine.isReady()).toBe(true);
  return { engine, nodes };
}

describe("weighted rendezvous hashing", () => {
  it("is deterministic, follows the weights, and moves only the keys of a node that leaves", () => {
    const nodes = [
      { nodeId: "a", weight: 1 },
      { nodeId: "b", weight: 2 },
      { nodeId: "c", weight: 1 },
    ];
    const keys = Array.from({ length: 4000 }, (_, i) => `pvc-${i}`);
    const winner = (k: string, ns = nodes) => rankByRendezvous(k, ns)[0]!.nodeId;
    const wins = { a: 0, b: 0, c: 0 } as Record<string, number>;
    for (const k of keys) wins[winner(k)]! += 1;
    expect(wins.b! / keys.length).toBeGreaterThan(0.45);
    expect(wins.b! / keys.length).toBeLessThan(0.55);
    expect(wins.a! / keys.length).toBeGreaterThan(0.2);
    expect(keys.map((k) => winner(k))).toEqual(keys.map((k) => winner(k)));
    const withoutC = nodes.filter((n) => n.nodeId !== "c");
    for (const k of keys) {
      const before = winner(k);
      if (before !== "c") expect(winner(k, withoutC)).toBe(before);
    }
  });
});

describe("ClusterEngine placement", () => {
  it("honours requisite and preferred topology", async () => {
    const { engine } = await cluster({ a: 10 * GiB, b: 10 * GiB, c: 10 * GiB });
    const pinned = await engine.placeVolume({ name: "v1", sizeBytes: GiB, requisite: ["b"], preferred: [] });
    expect(pinned.nodeId).toBe("b");
    const pref = await engine.placeVolume({
      name: "v1",
      sizeBytes: GiB,
      requisite: ["a", "c"],
      preferred: ["c"],
    });
    expect(pref.nodeId).toBe("c");
    const pref2 = await engine.placeVolume({ name: "v1", sizeBytes: GiB, preferred: ["a"] });
    expect(pref2.nodeId).toBe("a");
  });

  it("hashes the name over the nodes with room, and finds an earlier attempt's volume", async () => {
    const { engine, nodes } = await cluster({ a: 10 * GiB, b: 10 * GiB, c: GiB / 2 });
    const chosen = new Set<string>();
    for (let i = 0; i < 60; i++) {
      const e = await engine.placeVolume({ name: `pvc-${i}`, sizeBytes: GiB, preferred: [] });
      expect(e.nodeId).not.toBe("c"); // no room there
      expect((await engine.placeVolume({ name: `pvc-${i}`, sizeBytes: GiB, preferred: [] })).nodeId).toBe(
        e.nodeId,
      );
      chosen.add(e.nodeId);
    }
    expect([...chosen].sort()).toEqual(["a", "b"]);
    // A retry finds the volume where it is, even if hashing (weights changed) would now pick another node.
    await nodes.get("c")!.createVolume({ name: "made-earlier", sizeBytes: 1 });
    expect((await engine.placeVolume({ name: "made-earlier", sizeBytes: GiB, preferred: [] })).nodeId).toBe(
      "c",
    );
  });

  it("answers RESOURCE_EXHAUSTED when no allowed node has room, UNAVAILABLE naming an unreachable one", async () => {
    const { engine, nodes } = await cluster({ a: GiB, b: GiB });
    const full = await engine
      .placeVolume({ name: "big", sizeBytes: 2 * GiB, preferred: [] })
      .catch((e: unknown) => e);
    expect(toGrpcStatus(full).codeName).toBe("RESOURCE_EXHAUSTED");
    expect((full as Error).message).toMatch(/a can provision .*b can provision/);
    nodes.get("b")!.down = true;
    const down = await engine
      .placeVolume({ name: "x", sizeBytes: GiB, requisite: ["b"], preferred: [] })
      .catch((e: unknown) => e);
    expect(toGrpcStatus(down).codeName).toBe("UNAVAILABLE");
    expect((down as Error).message).toContain("b");
    // With another node up and with room, a node being down does not block placement.
    expect((await engine.placeVolume({ name: "y", sizeBytes: GiB, preferred: [] })).nodeId).toBe("a");
    const unknown = await engine
      .placeVolume({ name: "z", sizeBytes: 1, requisite: ["zz"], preferred: [] })
      .catch((e: unknown) => e);
    expect(toGrpcStatus(unknown).codeName).toBe("RESOURCE_EXHAUSTED");
  });

  it("reports a full background copy's start and end as Events on the PVC", async () => {
    const node = new FakeNode("a", 10 * GiB);
    const states: Array<"running" | "done"> = ["running", "running", "done"];
    const plain = node.getVolume;
    node.getVolume = async (n: string) => {
      const v = await plain(n);
      const state = states.shift() ?? "done";
      return v && { ...v, copy: { state, copiedChunks: state === "done" ? 8 : 3, totalChunks: 8 } };
    };
    const recorded: Array<{ reason: string; type: string; involved: { name: string } }> = [];
    const engine = new ClusterEngine({
      discovery: new StaticNodeDiscovery([{ nodeId: "a", address: "a:1" }]),
      connect: () => node,
      logger: silentLogger,
      events: { record: (e) => void recorded.push(e) },
      copyPollMs: 5,
    });
    await engine.refresh();
    const parameters = { "csi.storage.k8s.io/pvc/name": "copy", "csi.storage.k8s.io/pvc/namespace": "app" };
    const target = await engine.placeVolume({ name: "c", sizeBytes: GiB, preferred: [], parameters });
    expect(target.nodeId).toBe("a");
    await target.createVolume({
      name: "c",
      sizeBytes: GiB,
      meta: {},
      source: { kind: "snapshot", name: "s" },
      fullCopy: true,
    });
    // A restore without full copy and a plain volume report nothing.
    await target.createVolume({
      name: "d",
      sizeBytes: GiB,
      meta: {},
      source: { kind: "snapshot", name: "s" },
    });
    await target.createVolume({ name: "e", sizeBytes: GiB, meta: {} });
    for (let i = 0; i < 200 && recorded.length < 2; i++) await new Promise((r) => setTimeout(r, 5));
    expect(recorded.map((e) => [e.reason, e.type, e.involved.name])).toEqual([
      ["BackgroundCopyStarted", "Normal", "copy"],
      ["BackgroundCopyFinished", "Normal", "copy"],
    ]);
    engine.close();
  });

  it("reports a failed placement as a Warning Event on the PVC when the provisioner names it", async () => {
    const nodes = new Map([["a", new FakeNode("a", GiB)]]);
    const recorded: Array<{ reason: string; message: string; involved: { name: string } }> = [];
    const engine = new ClusterEngine({
      discovery: new StaticNodeDiscovery([{ nodeId: "a", address: "a:1" }]),
      connect: (ep) => nodes.get(ep.nodeId)!,
      logger: silentLogger,
      events: { record: (e) => void recorded.push(e) },
    });
    await engine.refresh();
    const parameters = { "csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "app" };
    await expect(
      engine.placeVolume({ name: "big", sizeBytes: 2 * GiB, preferred: [], parameters }),
    ).rejects.toThrow();
    expect(recorded.map((e) => [e.reason, e.involved.name])).toEqual([["PlacementFailed", "data"]]);
    expect(recorded[0]!.message).toMatch(/no node has room/);
    await engine.placeVolume({ name: "small", sizeBytes: 1, preferred: [], parameters });
    await expect(engine.placeVolume({ name: "big", sizeBytes: 2 * GiB, preferred: [] })).rejects.toThrow();
    expect(recorded).toHaveLength(1);
  });

  it("puts restores on the source's node unless the request wants another node, which then copies from it", async () => {
    const { engine, nodes } = await cluster({ a: 10 * GiB, b: 10 * GiB });
    expect(
      (await engine.placeVolume({ name: "r", sizeBytes: 0, preferred: [], sourceNodeId: "b" })).nodeId,
    ).toBe("b");
    // The scheduler picked a (WaitForFirstConsumer), or the topology allows only a: made on a.
    expect(
      (await engine.placeVolume({ name: "r", sizeBytes: 0, preferred: ["a"], sourceNodeId: "b" })).nodeId,
    ).toBe("a");
    const target = await engine.placeVolume({
      name: "r",
      sizeBytes: 0,
      requisite: ["a"],
      preferred: [],
      sourceNodeId: "b",
    });
    expect(target.nodeId).toBe("a");
    // Creating it there grants a the source snapshot on b and names b as the holder.
    await nodes.get("b")!.createVolume({ name: "vb", sizeBytes: 5 });
    await nodes.get("b")!.createSnapshot({ volume: "vb", name: "sb" });
    let seen: unknown;
    const a = nodes.get("a")!;
    const plain = a.createVolume.bind(a);
    a.createVolume = (o: { name: string; sizeBytes: number; source?: unknown }) => (
      (seen = o.source),
      plain(o)
    );
    await target.createVolume({
      name: "r",
      sizeBytes: 5,
      meta: {},
      source: { kind: "snapshot", name: "sb", nodeId: "b" },
    });
    expect(seen).toEqual({
      kind: "snapshot",
      name: "sb",
      nodeId: "b",
      holders: [{ nodeId: "b", address: "b:7443", name: "sb" }],
    });
    expect(nodes.get("b")!.grants).toEqual(["sb@a"]);
    // A source node that is down: placed elsewhere too (and the holders are its replicas).
    nodes.get("b")!.down = true;
    expect(
      (await engine.placeVolume({ name: "r2", sizeBytes: 0, preferred: [], sourceNodeId: "b" })).nodeId,
    ).toBe("a");
  });

  it("routes ids to their node; a node discovery does not list is UNAVAILABLE, not NOT_FOUND", async () => {
    const { engine, nodes } = await cluster({ a: GiB, b: GiB });
    await nodes.get("b")!.createVolume({ name: "only-on-b", sizeBytes: 1 });
    expect(await engine.engineFor("b").getVolume("only-on-b")).toBeDefined();
    expect(engine.nodeEngines().map((e) => e.nodeId)).toEqual(["a", "b"]);
    const gone = await engine
      .engineFor("q")
      .getVolume("v")
      .catch((e: unknown) => e);
    expect(isSnapblockError(gone, "CLOSED")).toBe(true);
    expect((gone as Error).message).toContain("node q");
  });

  it("the by-name data methods find the holding node", async () => {
    const { engine, nodes } = await cluster({ a: 10 * GiB, b: 10 * GiB });
    await nodes.get("b")!.createVolume({ name: "vb", sizeBytes: 5 });
    await engine.createSnapshot({ volume: "vb", name: "sb", meta: {} });
    expect(nodes.get("b")!.snapshots.has("sb")).toBe(true);
    const restored = await engine.createVolume({
      name: "rb",
      sizeBytes: 5,
      meta: {},
      source: { kind: "snapshot", name: "sb" },
    });
    expect(restored.name).toBe("rb");
    expect(nodes.get("b")!.volumes.has("rb")).toBe(true);
    expect((await engine.listVolumes()).items).toHaveLength(2);
    expect((await engine.capacity()).availableBytes).toBe(20 * GiB);
    await engine.deleteVolume("rb");
    expect(await engine.getVolume("rb")).toBeUndefined();
  });

  it("pins a point on the node holding it, by name or through engineFor; a missing node is UNAVAILABLE", async () => {
    const { engine, nodes } = await cluster({ a: 10 * GiB, b: 10 * GiB });
    await nodes.get("b")!.createVolume({ name: "vb", sizeBytes: 5 });
    await nodes.get("b")!.createSnapshot({ volume: "vb", name: "rp--vb-1" });
    expect((await engine.pinPoint("rp--vb-1", true)).pinned).toBe(true);
    expect(nodes.get("b")!.snapshots.get("rp--vb-1")?.pinned).toBe(true);
    expect((await engine.engineFor("b").pinPoint("rp--vb-1", false)).pinned).toBe(false);
    expect(nodes.get("b")!.snapshots.get("rp--vb-1")?.pinned).toBe(false);
    await expect(engine.pinPoint("nope", true)).rejects.toMatchObject({ code: "NOT_FOUND" });
    await expect(engine.engineFor("q").pinPoint("rp--vb-1", true)).rejects.toMatchObject({ code: "CLOSED" });
  });

  it("lists a snapshot's block metadata on the node holding it; a missing node is UNAVAILABLE", async () => {
    const { engine, nodes } = await cluster({ a: 10 * GiB, b: 10 * GiB });
    await nodes.get("b")!.createVolume({ name: "vb", sizeBytes: 5 });
    await engine.createSnapshot({ volume: "vb", name: "sb", meta: {} });
    const pages = async (e: EngineApi, snapshot: string) => {
      const out = [];
      for await (const p of e.blockMetadata({ snapshot, startingOffset: 0, maxResults: 10 })) out.push(p);
      return out;
    };
    expect(await pages(engine, "sb")).toEqual([{ sizeBytes: 1, ranges: [{ offset: 98, length: 1 }] }]);
    expect(await pages(engine.engineFor("b"), "sb")).toHaveLength(1);
    await expect(pages(engine, "nope")).rejects.toMatchObject({ code: "NOT_FOUND" });
    await expect(pages(engine.engineFor("q"), "sb")).rejects.toMatchObject({ code: "CLOSED" });
  });

  it("refresh connects new nodes and closes removed ones", async () => {
    const list = [{ nodeId: "a", address: "h:1" }];
    const made: FakeNode[] = [];
    const engine = new ClusterEngine({
      discovery: { nodes: () => Promise.resolve(list.map((n) => ({ ...n }))) },
      connect: (ep) => {
        const n = new FakeNode(ep.nodeId, GiB);
        made.push(n);
        return n;
      },
      logger: silentLogger,
    });
    await engine.refresh();
    list.push({ nodeId: "b", address: "h:2" });
    await engine.refresh();
    expect(made.map((n) => n.nodeId)).toEqual(["a", "b"]);
    list.shift();
    await engine.refresh();
    expect(made[0]!.closed).toBe(true);
    expect(engine.nodeEngines().map((e) => e.nodeId)).toEqual(["b"]);
  });
});

describe("static node lists", () => {
  it("parses --nodes and files, refusing duplicates and bad entries", () => {
    expect(
      parseNodeList("node-a=127.0.0.1:7001, node-b=[::1]:7002\n# comment\nnode-c=host:7003", "--nodes"),
    ).toEqual([
      { nodeId: "node-a", address: "127.0.0.1:7001" },
      { nodeId: "node-b", address: "[::1]:7002" },
      { nodeId: "node-c", address: "host:7003" },
    ]);
    expect(() => parseNodeList("a=h:1,a=h:2", "--nodes")).toThrow(/twice/);
    expect(() => parseNodeList("a", "--nodes")).toThrow(/node-id=host:port/);
    expect(() => parseNodeList("a=nohostport", "--nodes")).toThrow(/host:port/);
    expect(() => parseNodeList("bad/id=h:1", "--nodes")).toThrow(/node id/);
  });
});
