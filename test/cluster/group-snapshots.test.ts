import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TOPOLOGY_KEY, callCsi, type CsiSnapshotOutput, type CsiVolumeOutput } from "../../pkg/csi/index.js";
import { RemoteEngine } from "../../pkg/engine-service/index.js";
import { AlternatingWriter, cutProblem, writeNumber } from "../csi/alternating-writer.js";
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

/**
 * Group snapshots across nodes with real processes: three node plugins (own pool, engine service
 * over mutual TLS, nbdfuse + loop block devices) and a controller. One volume per node, written
 * by a writer alternating numbered writes over the three through each node's NBD export; every
 * group is one consistent cut, read back from the nodes (ReadSnapshotChunks, granted by the
 * controller). The hold bound (VolumeGroupSnapshotClass parameter) is made too short to be met:
 * the group fails with ABORTED and leaves no snapshot and no record anywhere, and writes go on.
 * CLUSTER_GROUP_SNAPSHOTS sets how many groups are taken under load (default 30).
 */
const NODES = ["node-a", "node-b", "node-c"] as const;
const GROUPS = Number(process.env.CLUSTER_GROUP_SNAPSHOTS ?? 30);
const MiB = 2 ** 20;
const BLOCK = { block: {}, accessMode: { mode: "SINGLE_NODE_WRITER" } };

const haveTools = ["nbdfuse", "losetup"].every((t) => {
  try {
    execFileSync("which", [t], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
});

interface GroupOut {
  groupSnapshotId: string;
  snapshots: CsiSnapshotOutput[];
}

describe.skipIf(!haveTools || process.getuid?.() !== 0)("group snapshots across nodes", () => {
  let dir: string;
  let pki: TestPki;
  const ports = new Map<string, number>();
  const nodes = new Map<string, SnapblockProcess>();
  const remotes = new Map<string, RemoteEngine>();
  let controller: SnapblockProcess;
  const volumes: { node: string; volumeId: string; name: string; staging: string; target: string }[] = [];
  let writer: AlternatingWriter | undefined;

  /** A node's engine service, as the controller (default) or as another node: one channel each. */
  const engineOf = (node: string, as = "controller"): RemoteEngine => {
    const key = `${node}@${as}`;
    let r = remotes.get(key);
    if (!r) {
      r = new RemoteEngine({
        nodeId: node,
        address: `127.0.0.1:${ports.get(node)}`,
        transport: { tls: as === "controller" ? pki.controller : pki.node(as) },
        callTimeoutMs: 5000,
      });
      remotes.set(key, r);
    }
    return r;
  };
  const group = () => controller.clients.groupController;
  const createGroup = (name: string, parameters: Record<string, string> = {}) =>
    callCsi<{ groupSnapshot: GroupOut }>(group(), "CreateVolumeGroupSnapshot", {
      name,
      sourceVolumeIds: volumes.map((v) => v.volumeId),
      parameters,
    });
  const listSnapshots = async () =>
    (
      await callCsi<{ entries: { snapshot: CsiSnapshotOutput }[] }>(
        controller.clients.controller,
        "ListSnapshots",
        {},
      )
    ).entries.map((e) => e.snapshot.snapshotId);

  /** The write number at offset 0 of a member, read from its node as node-a would copy it. */
  async function memberNumber(snapshotId: string): Promise<number> {
    const [node, name] = snapshotId.split("/") as [string, string];
    await engineOf(node).grantPull(name, "node-a");
    const reader = engineOf(node, "node-a");
    for await (const chunk of reader.readSnapshotChunks(name)) {
      if (chunk.offset === 0) return writeNumber(chunk.data);
    }
    return 0;
  }

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "snapblock-groups-"));
    pki = makeTestPki(dir);
    for (const n of NODES) ports.set(n, await freePort());
    const cluster: TestCluster = { dir, pki, ports };
    const started = await Promise.all(
      NODES.map((node) =>
        startSnapblock(nodeArgs(cluster, node, { attach: "nbdfuse-loop" }), nodeSocket(cluster, node)),
      ),
    );
    started.forEach((p, i) => nodes.set(NODES[i]!, p));
    controller = await startSnapblock(controllerArgs(cluster), controllerSocket(cluster));
    for (const node of NODES) {
      const { volume } = await callCsi<{ volume: CsiVolumeOutput }>(
        controller.clients.controller,
        "CreateVolume",
        {
          name: `data-${node}`,
          volumeCapabilities: [BLOCK],
          capacityRange: { requiredBytes: 16 * MiB },
          accessibilityRequirements: { requisite: [{ segments: { [TOPOLOGY_KEY]: node } }] },
        },
      );
      const key = volume.volumeId.replace("/", "_");
      const staging = path.join(dir, "kubelet", node, "staging", key);
      const target = path.join(dir, "kubelet", node, "pods", key, "dev");
      mkdirSync(staging, { recursive: true });
      mkdirSync(path.dirname(target), { recursive: true });
      const client = nodes.get(node)!.clients.node;
      await callCsi(
        client,
        "NodeStageVolume",
        { volumeId: volume.volumeId, stagingTargetPath: staging, volumeCapability: BLOCK },
        120_000,
      );
      await callCsi(client, "NodePublishVolume", {
        volumeId: volume.volumeId,
        stagingTargetPath: staging,
        targetPath: target,
        volumeCapability: BLOCK,
      });
      volumes.push({ node, volumeId: volume.volumeId, name: `data-${node}`, staging, target });
    }
    // The writer goes through each node's own NBD export of its staged volume.
    writer = await AlternatingWriter.open(
      volumes.map((v) => ({
        socketPath: path.join(dir, v.node, "nbd", `${v.name}.sock`),
        exportName: v.name,
      })),
    );
    writer.start();
    await writer.reach(3);
  }, 240_000);

  afterAll(async () => {
    await writer?.stop().catch(() => undefined);
    for (const v of volumes) {
      const client = nodes.get(v.node)?.clients.node;
      if (!client) continue;
      await callCsi(client, "NodeUnpublishVolume", { volumeId: v.volumeId, targetPath: v.target }).catch(
        () => undefined,
      );
      await callCsi(
        client,
        "NodeUnstageVolume",
        { volumeId: v.volumeId, stagingTargetPath: v.staging },
        60_000,
      ).catch(() => undefined);
    }
    for (const r of remotes.values()) r.close();
    await Promise.all(
      [controller, ...nodes.values()].filter((p) => p).map((p) => p.stop().catch(() => null)),
    );
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  it(`takes ${GROUPS} consistent cuts of volumes on three nodes under an alternating writer`, async () => {
    const taken: { group: GroupOut; ackedBefore: number; sentAfter: number }[] = [];
    const started = performance.now();
    for (let i = 0; i < GROUPS; i++) {
      const ackedBefore = writer!.acked;
      const { groupSnapshot } = await createGroup(`cut-${i}`);
      taken.push({ group: groupSnapshot, ackedBefore, sentAfter: writer!.sent });
    }
    const seconds = (performance.now() - started) / 1000;
    const acked = writer!.acked;
    await writer!.reach(acked + 10); // writes go on after the holds
    const problems: string[] = [];
    for (const [i, t] of taken.entries()) {
      expect(t.group.snapshots.map((s) => s.snapshotId.split("/")[0]).sort()).toEqual([...NODES]);
      const numbers: number[] = [];
      for (const s of t.group.snapshots) numbers.push(await memberNumber(s.snapshotId));
      const problem = cutProblem(numbers, t.ackedBefore, t.sentAfter);
      if (problem) problems.push(`group ${i}: ${problem}`);
    }
    expect(problems).toEqual([]);
    console.log(`${GROUPS} group snapshots across 3 nodes under load in ${seconds.toFixed(1)} s`);
    for (const t of taken) {
      await callCsi(group(), "DeleteVolumeGroupSnapshot", {
        groupSnapshotId: t.group.groupSnapshotId,
        snapshotIds: t.group.snapshots.map((s) => s.snapshotId),
      });
    }
    expect(await listSnapshots()).toEqual([]);
  }, 300_000);

  it("fails a group whose hold outlasts its bound, leaving nothing behind; writes go on", async () => {
    const before = await listSnapshots();
    const outcomes = { taken: 0, failed: 0 };
    // 1 ms cannot cover a round trip to three nodes: those fail. The others race their bound.
    const bounds = ["1ms", "1ms", "1ms", "2ms", "5ms", "10ms", "20ms", "50ms", "2s"];
    for (const [i, bound] of bounds.entries()) {
      const name = `bounded-${i}`;
      const ackedBefore = writer!.acked;
      try {
        const { groupSnapshot } = await createGroup(name, { "snapblock.dev/holdTimeout": bound });
        outcomes.taken++;
        const numbers: number[] = [];
        for (const s of groupSnapshot.snapshots) numbers.push(await memberNumber(s.snapshotId));
        expect(cutProblem(numbers, ackedBefore, writer!.sent)).toBeUndefined();
        await callCsi(group(), "DeleteVolumeGroupSnapshot", {
          groupSnapshotId: groupSnapshot.groupSnapshotId,
          snapshotIds: groupSnapshot.snapshots.map((s) => s.snapshotId),
        });
      } catch (err) {
        const e = err as { code?: number; details?: string };
        expect(e.code, e.details).toBe(status.ABORTED);
        expect(e.details).toMatch(/not taken/);
        outcomes.failed++;
      }
      // Nothing of a failed (or deleted) group is left: no member on any node, no record.
      expect(await listSnapshots()).toEqual(before);
      for (const node of NODES) {
        expect((await engineOf(node).listSnapshots()).items).toEqual([]);
      }
      const got = await failureCode(
        callCsi(group(), "GetVolumeGroupSnapshot", {
          groupSnapshotId: `${volumes[0]!.node}/${name}`,
          snapshotIds: ["x/y"],
        }),
      );
      expect(got.code).toBe(status.NOT_FOUND);
      const acked = writer!.acked;
      await writer!.reach(acked + 5); // the holds were let go
    }
    expect(outcomes.failed).toBeGreaterThan(0);
    expect(outcomes.taken).toBeGreaterThan(0);
    console.log(`bounded holds: ${outcomes.taken} taken, ${outcomes.failed} failed cleanly`);
  }, 120_000);

  it("lets only the controller hold a node's writes", async () => {
    const intruder = engineOf("node-b", "node-a");
    const denied = await intruder
      .holdWrites({ volumes: ["data-node-b"], timeoutMs: 1000 })
      .catch((e: unknown) => e);
    expect(String(denied)).toMatch(/only the controller/);
    const snap = await intruder
      .createSnapshotGroup({ members: [{ volume: "data-node-b", name: "x", meta: {} }] })
      .catch((e: unknown) => e);
    expect(String(snap)).toMatch(/only the controller/);
  });
});
