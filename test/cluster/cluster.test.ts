import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Metadata, credentials, status, type ServiceError } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  TOPOLOGY_KEY,
  callCsi,
  loadCsiProto,
  type CsiVolumeOutput,
  type CsiSnapshotOutput,
} from "../../pkg/csi/index.js";
import { failureCode } from "../csi/local-process.js";
import {
  controllerArgs,
  controllerSocket,
  freePort,
  nodeArgs,
  nodeSocket,
  startSnapblock,
  type SnapblockProcess,
  type TestCluster,
} from "./cluster-processes.js";
import { makeTestPki, type TestPki } from "./test-certs.js";
import { loadEngineProto } from "../../pkg/engine-service/index.js";

type UnaryFn = (
  req: object,
  md: Metadata,
  opts: { deadline: Date },
  cb: (e: ServiceError | null) => void,
) => unknown;

const NODES = ["node-a", "node-b", "node-c"] as const;
const GRPC_UNAVAILABLE = 14;
const GRPC_RESOURCE_EXHAUSTED = 8;
const MiB = 2 ** 20;
const CAPS = [{ mount: { fsType: "ext4", mountFlags: [] }, accessMode: { mode: "SINGLE_NODE_WRITER" } }];
const at = (node: string) => ({ segments: { [TOPOLOGY_KEY]: node } });

/**
 * Cluster mode on this machine: three node plugins (own pool, own engine port on loopback,
 * mutual TLS with a throwaway CA) and one controller with a static node list, driven over the
 * controller's CSI socket like the sidecars would.
 */
describe("cluster mode: one controller, three node plugins", () => {
  let dir: string;
  let pki: TestPki;
  const ports = new Map<string, number>();
  const metricsPorts = new Map<string, number>();
  const nodes = new Map<string, SnapblockProcess>();
  let controller: SnapblockProcess;

  const cluster = (): TestCluster => ({ dir, pki, ports });
  const startNode = (node: string) =>
    startSnapblock(
      nodeArgs(cluster(), node, { metricsAddress: `127.0.0.1:${metricsPorts.get(node)}` }),
      nodeSocket(cluster(), node),
    );

  const startController = () =>
    startSnapblock(
      controllerArgs(cluster(), {
        nodes: NODES,
        metricsAddress: `127.0.0.1:${metricsPorts.get("controller")}`,
      }),
      controllerSocket(cluster()),
    );

  const createVolume = (name: string, extra: object = {}) =>
    callCsi<{ volume: CsiVolumeOutput }>(controller.clients.controller, "CreateVolume", {
      name,
      volumeCapabilities: CAPS,
      capacityRange: { requiredBytes: 8 * MiB },
      ...extra,
    });

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "snapblock-cluster-"));
    pki = makeTestPki(dir);
    for (const n of [...NODES, "controller"]) {
      ports.set(n, await freePort());
      metricsPorts.set(n, await freePort());
    }
    const started = await Promise.all(NODES.map((n) => startNode(n)));
    started.forEach((p, i) => nodes.set(NODES[i]!, p));
    controller = await startController();
  });

  afterAll(async () => {
    await Promise.all(
      [controller, ...nodes.values()].filter((p) => p).map((p) => p.stop().catch(() => null)),
    );
    rmSync(dir, { recursive: true, force: true });
  });

  it("places by topology: requisite and preferred name the node", async () => {
    for (const node of NODES) {
      const { volume } = await createVolume(`pinned-${node}`, {
        accessibilityRequirements: { requisite: [at(node)], preferred: [at(node)] },
      });
      expect(volume.volumeId).toBe(`${node}/pinned-${node}`);
      expect(volume.accessibleTopology).toEqual([at(node)]);
    }
    const { volume } = await createVolume("preferred-b", {
      accessibilityRequirements: { requisite: [at("node-a"), at("node-b")], preferred: [at("node-b")] },
    });
    expect(volume.volumeId).toBe("node-b/preferred-b");
  });

  it("places by hashing without topology: deterministic, spread over the nodes, idempotent", async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 12; i++) {
      const { volume } = await createVolume(`hashed-${i}`);
      const again = await createVolume(`hashed-${i}`);
      expect(again.volume.volumeId).toBe(volume.volumeId);
      seen.add(volume.volumeId.split("/")[0]!);
    }
    expect(seen.size).toBeGreaterThanOrEqual(2);
    // ListVolumes pages across the nodes and returns each volume once.
    const ids: string[] = [];
    let token = "";
    do {
      const page = await callCsi<{ entries: Array<{ volume: CsiVolumeOutput }>; nextToken: string }>(
        controller.clients.controller,
        "ListVolumes",
        { maxEntries: 5, startingToken: token },
      );
      ids.push(...page.entries.map((e) => e.volume.volumeId));
      token = page.nextToken;
    } while (token !== "");
    expect(new Set(ids).size).toBe(ids.length);
    for (let i = 0; i < 12; i++) expect(ids.some((id) => id.endsWith(`/hashed-${i}`))).toBe(true);
  });

  it("snapshots a volume on each node and restores on the source's node", async () => {
    for (const node of NODES) {
      const { snapshot } = await callCsi<{ snapshot: CsiSnapshotOutput }>(
        controller.clients.controller,
        "CreateSnapshot",
        { name: `snap-${node}`, sourceVolumeId: `${node}/pinned-${node}` },
      );
      expect(snapshot.snapshotId).toBe(`${node}/snap-${node}`);
      expect(snapshot.readyToUse).toBe(true);
      const { volume } = await createVolume(`restored-${node}`, {
        volumeContentSource: { snapshot: { snapshotId: snapshot.snapshotId } },
      });
      expect(volume.volumeId).toBe(`${node}/restored-${node}`);
      expect(volume.contentSource?.snapshot?.snapshotId).toBe(snapshot.snapshotId);
    }
    // Pinned to another node: made there, filled from the snapshot's node (cross-node restore).
    const { volume: elsewhere } = await createVolume("restored-elsewhere", {
      volumeContentSource: { snapshot: { snapshotId: "node-a/snap-node-a" } },
      accessibilityRequirements: { requisite: [at("node-b")] },
    });
    expect(elsewhere.volumeId).toBe("node-b/restored-elsewhere");
    expect(elsewhere.contentSource?.snapshot?.snapshotId).toBe("node-a/snap-node-a");
  });

  it("serves changed-block metadata on the controller socket from the node holding the snapshot", async () => {
    const { SnapshotMetadata } = loadCsiProto().csi.v1;
    const client = new SnapshotMetadata(
      `unix:${path.join(dir, "controller.sock")}`,
      credentials.createInsecure(),
    );
    const read = async (method: string, request: object) => {
      const fn = (client as unknown as Record<string, (r: object) => AsyncIterable<unknown>>)[method]!;
      const out: unknown[] = [];
      for await (const m of fn.call(client, request)) out.push(m);
      return out;
    };
    const code = (method: string, request: object) =>
      read(method, request).then(
        () => "OK",
        (e: unknown) => status[(e as ServiceError).code],
      );
    try {
      await callCsi(controller.clients.controller, "CreateSnapshot", {
        name: "snap-node-b-2",
        sourceVolumeId: "node-b/pinned-node-b",
      });
      // Nothing was ever written to these volumes: one message, no ranges, the snapshot's size.
      const empty = { blockMetadataType: "VARIABLE_LENGTH", volumeCapacityBytes: 8 * MiB, blockMetadata: [] };
      expect(
        await read("GetMetadataAllocated", { snapshotId: "node-c/snap-node-c", startingOffset: 0 }),
      ).toEqual([empty]);
      expect(
        await read("GetMetadataDelta", {
          baseSnapshotId: "node-b/snap-node-b",
          targetSnapshotId: "node-b/snap-node-b-2",
          startingOffset: 0,
          maxResults: 10,
        }),
      ).toEqual([empty]);
      expect(
        await code("GetMetadataDelta", {
          baseSnapshotId: "node-a/snap-node-a",
          targetSnapshotId: "node-b/snap-node-b-2",
          startingOffset: 0,
        }),
      ).toBe("INVALID_ARGUMENT");
      expect(await code("GetMetadataAllocated", { snapshotId: "node-a/nope", startingOffset: 0 })).toBe(
        "NOT_FOUND",
      );
      expect(
        await code("GetMetadataAllocated", { snapshotId: "node-a/snap-node-a", startingOffset: 9 * MiB }),
      ).toBe("OUT_OF_RANGE");
      // The stream came from node-b's engine service, asked by the controller.
      expect(
        nodes
          .get("node-b")!
          .log.some((l) => l.includes('"method":"ListBlockMetadata"') && l.includes('"caller":"controller"')),
      ).toBe(true);
    } finally {
      client.close();
    }
  });

  it("reports capacity per topology segment", async () => {
    const perNode = await Promise.all(
      NODES.map((n) =>
        callCsi<{ availableCapacity: number }>(controller.clients.controller, "GetCapacity", {
          volumeCapabilities: CAPS,
          accessibleTopology: at(n),
        }),
      ),
    );
    for (const c of perNode) {
      expect(c.availableCapacity).toBeGreaterThan(0);
      expect(c.availableCapacity).toBeLessThanOrEqual(256 * MiB);
    }
    const all = await callCsi<{ availableCapacity: number }>(controller.clients.controller, "GetCapacity", {
      volumeCapabilities: CAPS,
    });
    expect(all.availableCapacity).toBe(perNode.reduce((s, c) => s + c.availableCapacity, 0));
    const none = await callCsi<{ availableCapacity: number }>(controller.clients.controller, "GetCapacity", {
      accessibleTopology: at("node-zz"),
    });
    expect(none.availableCapacity).toBe(0);
    const full = await failureCode(
      createVolume("too-big", {
        capacityRange: { requiredBytes: 1024 * MiB },
        accessibilityRequirements: { requisite: [at("node-c")] },
      }),
    );
    expect(full.code).toBe(GRPC_RESOURCE_EXHAUSTED);
    expect(full.details).toMatch(/node-c can provision/);
  });

  it("serves /metrics on the controller (CSI calls) and on each node (engine and CSI)", async () => {
    const scrape = async (who: string) =>
      (await fetch(`http://127.0.0.1:${metricsPorts.get(who)}/metrics`)).text();
    expect(await scrape("controller")).toMatch(/snapblock_csi_calls_total\{[^}]*method="CreateVolume"/);
    const node = await scrape("node-a");
    expect(node).toMatch(/snapblock_engine_/);
    expect(node).toMatch(/snapblock_csi_calls_total/);
  });

  it("refuses an engine-service client without a certificate", async () => {
    const { Client: EngineClient } = loadEngineProto();
    // The certificate's name, not the IP, as TLS server name (an IP there is DEP0123, RFC 6066).
    const bare = new EngineClient(
      `127.0.0.1:${ports.get("node-a")}`,
      credentials.createSsl(readFileSync(pki.controller.caFile)),
      { "grpc.ssl_target_name_override": "localhost" },
    );
    const err = await new Promise<ServiceError | null>((resolve) => {
      const fn = (bare as unknown as Record<string, UnaryFn>)["ListVolumes"]!;
      fn.call(bare, {}, new Metadata(), { deadline: new Date(Date.now() + 5000) }, (e: ServiceError | null) =>
        resolve(e),
      );
    });
    bare.close();
    expect(err?.code).toBe(GRPC_UNAVAILABLE);
  });

  it("a controller killed mid-way and restarted finds what it made: the retry returns the same volume", async () => {
    const { volume } = await createVolume("survives-controller");
    await controller.kill();
    controller = await startController();
    const again = await createVolume("survives-controller");
    expect(again.volume.volumeId).toBe(volume.volumeId);
    const { snapshot } = await callCsi<{ snapshot: CsiSnapshotOutput }>(
      controller.clients.controller,
      "CreateSnapshot",
      {
        name: "after-restart",
        sourceVolumeId: volume.volumeId,
      },
    );
    expect(snapshot.snapshotId.split("/")[0]).toBe(volume.volumeId.split("/")[0]);
  });

  it("a killed node answers UNAVAILABLE with its name, and works again once restarted", async () => {
    await nodes.get("node-c")!.kill();
    const get = await failureCode(
      callCsi(controller.clients.controller, "ControllerGetVolume", { volumeId: "node-c/pinned-node-c" }),
    );
    expect(get.code).toBe(GRPC_UNAVAILABLE);
    expect(get.details).toContain("node-c");
    const create = await failureCode(
      createVolume("while-c-is-down", { accessibilityRequirements: { requisite: [at("node-c")] } }),
    );
    expect(create.code).toBe(GRPC_UNAVAILABLE);
    expect(create.details).toContain("node-c");
    const cap = await callCsi<{ availableCapacity: number }>(controller.clients.controller, "GetCapacity", {
      accessibleTopology: at("node-c"),
    });
    expect(cap.availableCapacity).toBe(0);
    // Other nodes keep working.
    expect(
      (await createVolume("while-c-is-down-b", { accessibilityRequirements: { requisite: [at("node-b")] } }))
        .volume.volumeId,
    ).toBe("node-b/while-c-is-down-b");

    nodes.set("node-c", await startNode("node-c"));
    // The controller reconnects on its own (short reconnect backoff); the pool kept its volumes.
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        const res = await callCsi<{ volume: CsiVolumeOutput }>(
          controller.clients.controller,
          "ControllerGetVolume",
          {
            volumeId: "node-c/pinned-node-c",
          },
        );
        expect(res.volume.volumeId).toBe("node-c/pinned-node-c");
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    const { volume } = await createVolume("while-c-is-down", {
      accessibilityRequirements: { requisite: [at("node-c")] },
    });
    expect(volume.volumeId).toBe("node-c/while-c-is-down");
  });
});
