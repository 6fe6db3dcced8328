import { execFileSync, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readSync,
  rmSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Pool } from "../../pkg/engine/index.js";
import { replicaName, type EngineSnapshot } from "../../pkg/engine-api/index.js";
import { RemoteEngine } from "../../pkg/engine-service/index.js";
import { TOPOLOGY_KEY, callCsi, type CsiSnapshotOutput, type CsiVolumeOutput } from "../../pkg/csi/index.js";
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

const NODES = ["node-a", "node-b", "node-c", "node-d"] as const;
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const MiB = 2 ** 20;
const CS = 64 * 1024;
const BLOCK = [{ block: {}, accessMode: { mode: "SINGLE_NODE_WRITER" } }];
const at = (node: string) => ({ segments: { [TOPOLOGY_KEY]: node } });
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

const haveTools = ["nbdfuse", "losetup"].every((t) => {
  try {
    execFileSync("which", [t], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
});

/** The processes' logs, for a failure message (what the nodes and the controller said last). */
let logsOf: () => string = () => "";

async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    const v = await check().catch((err: unknown) => {
      last = err;
      return undefined;
    });
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) {
      throw new Error(`timed out waiting for ${what} (last error: ${String(last)})\n${logsOf()}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * Snapshots beyond one node, with real processes: four node plugins (own pool, own engine port,
 * own node certificate, nbdfuse + loop for the block devices) and a controller over mutual TLS.
 * Data is written and read through real block devices staged by the node plugins.
 */
describe.skipIf(!haveTools)("snapshots beyond one node: restore anywhere, replicas, node loss", () => {
  let dir: string;
  let pki: TestPki;
  const ports = new Map<string, number>();
  const nodes = new Map<string, SnapblockProcess>();
  const inspectors = new Map<string, RemoteEngine>();
  let controller: SnapblockProcess;
  const staged: { node: string; volumeId: string; staging: string; target: string }[] = [];

  const cluster = (): TestCluster => ({ dir, pki, ports });
  const startNode = (node: string) =>
    startSnapblock(
      nodeArgs(cluster(), node, { attach: "nbdfuse-loop", extra: ["--pull-rate-limit", "2M"] }),
      nodeSocket(cluster(), node),
    );

  /** The engine of a node as the controller sees it (to look at replicas and pulls). */
  const inspect = (node: string): RemoteEngine => {
    let r = inspectors.get(node);
    if (!r) {
      r = new RemoteEngine({
        nodeId: node,
        address: `127.0.0.1:${ports.get(node)}`,
        transport: { tls: pki.controller },
        callTimeoutMs: 5000,
      });
      inspectors.set(node, r);
    }
    return r;
  };

  const ctl = () => controller.clients.controller;
  const createVolume = (name: string, extra: object) =>
    callCsi<{ volume: CsiVolumeOutput }>(ctl(), "CreateVolume", {
      name,
      volumeCapabilities: BLOCK,
      capacityRange: { requiredBytes: 16 * MiB },
      ...extra,
    });
  const snapshot = (name: string, volumeId: string, replicas: number) =>
    callCsi<{ snapshot: CsiSnapshotOutput }>(ctl(), "CreateSnapshot", {
      name,
      sourceVolumeId: volumeId,
      parameters: { "snapblock.dev/replicas": String(replicas) },
    });

  async function stage(node: string, volumeId: string): Promise<string> {
    const key = volumeId.replace("/", "_");
    const staging = path.join(dir, "kubelet", node, "staging", key);
    const target = path.join(dir, "kubelet", node, "pods", key, "dev");
    mkdirSync(staging, { recursive: true });
    mkdirSync(path.dirname(target), { recursive: true });
    const cap = BLOCK[0];
    const client = nodes.get(node)!.clients.node;
    await callCsi(
      client,
      "NodeStageVolume",
      { volumeId, stagingTargetPath: staging, volumeCapability: cap },
      120_000,
    );
    await callCsi(client, "NodePublishVolume", {
      volumeId,
      stagingTargetPath: staging,
      targetPath: target,
      volumeCapability: cap,
    });
    staged.push({ node, volumeId, staging, target });
    return target;
  }

  async function unstage(volumeId: string): Promise<void> {
    const i = staged.findIndex((s) => s.volumeId === volumeId);
    const s = staged[i]!;
    staged.splice(i, 1);
    const client = nodes.get(s.node)!.clients.node;
    await callCsi(client, "NodeUnpublishVolume", { volumeId, targetPath: s.target });
    await callCsi(client, "NodeUnstageVolume", { volumeId, stagingTargetPath: s.staging }, 60_000);
  }

  const readDevice = (target: string, offset: number, length: number): Buffer => {
    const fd = openSync(target, "r");
    try {
      const buf = Buffer.alloc(length);
      let done = 0;
      while (done < length) done += readSync(fd, buf, done, length - done, offset + done);
      return buf;
    } finally {
      closeSync(fd);
    }
  };
  const writeDevice = (target: string, offset: number, data: Buffer): void => {
    const fd = openSync(target, "r+");
    try {
      writeSync(fd, data, 0, data.length, offset);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  };

  /** A 16 MiB volume on `node` with 4 MiB of random data in scattered chunks; returns its content. */
  async function volumeWithData(name: string, node: string): Promise<{ id: string; content: Buffer }> {
    const { volume } = await createVolume(name, { accessibilityRequirements: { requisite: [at(node)] } });
    const target = await stage(node, volume.volumeId);
    const content = Buffer.alloc(16 * MiB);
    for (let i = 0; i < 64; i++) {
      const offset = ((i * 37) % 256) * CS;
      const data = randomBytes(CS);
      data.copy(content, offset);
      writeDevice(target, offset, data);
    }
    await unstage(volume.volumeId);
    return { id: volume.volumeId, content };
  }

  const volumeOn = (node: string, name: string) => inspect(node).getVolume(name);
  const replicaOn = (node: string, origin: string) => inspect(node).getSnapshot(replicaName(origin));
  const completeReplicas = async (origin: string, exclude: string[] = []): Promise<string[]> => {
    const out: string[] = [];
    for (const n of NODES) {
      if (exclude.includes(n)) continue;
      const s: EngineSnapshot | undefined = await replicaOn(n, origin).catch(() => undefined);
      if (s && !s.pull) out.push(n);
    }
    return out;
  };

  beforeAll(async () => {
    logsOf = () =>
      [...nodes.entries(), ["controller", controller] as const]
        .filter(([, p]) => p)
        .map(
          ([n, p]) =>
            `--- ${n}\n${p.log
              .filter((l) => !l.includes('"level":"debug"'))
              .slice(-25)
              .join("\n")}`,
        )
        .join("\n");
    dir = mkdtempSync(path.join(tmpdir(), "snapblock-repl-"));
    pki = makeTestPki(dir);
    for (const n of [...NODES]) ports.set(n, await freePort());
    const started = await Promise.all(NODES.map((n) => startNode(n)));
    started.forEach((p, i) => nodes.set(NODES[i]!, p));
    controller = await startSnapblock(
      controllerArgs(cluster(), { extra: ["--node-lost-after", "3", "--replica-check-every", "1"] }),
      controllerSocket(cluster()),
    );
  }, 180_000);

  afterAll(async () => {
    for (const s of [...staged]) await unstage(s.volumeId).catch(() => undefined);
    for (const r of inspectors.values()) r.close();
    await Promise.all(
      [controller, ...nodes.values()].filter((p) => p).map((p) => p.stop().catch(() => null)),
    );
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  it("restores on another node: usable at once, every read equals the snapshot during and after the pull, writes survive", async () => {
    const src = await volumeWithData("src-1", "node-a");
    const { snapshot: snap } = await snapshot("snap-1", src.id, 0);
    const { volume } = await createVolume("restored-1", {
      volumeContentSource: { snapshot: { snapshotId: snap.snapshotId } },
      accessibilityRequirements: { requisite: [at("node-b")] },
    });
    expect(volume.volumeId).toBe("node-b/restored-1");
    const first = await callCsi<{ status: { volumeCondition: { abnormal: boolean; message: string } } }>(
      ctl(),
      "ControllerGetVolume",
      { volumeId: volume.volumeId },
    );
    expect(first.status.volumeCondition.message).toMatch(/restoring from snapshot node-a\/snap-1/);

    const target = await stage("node-b", volume.volumeId);
    // The pull is rate-limited to 2 MiB/s: these reads race it, on demand.
    const mine = Buffer.from(src.content);
    for (let offset = 0; offset < 16 * MiB; offset += 2 * MiB) {
      expect(sha(readDevice(target, offset, 2 * MiB))).toBe(sha(mine.subarray(offset, offset + 2 * MiB)));
      const write = randomBytes(4096);
      write.copy(mine, offset + 12345 - (12345 % 512));
      writeDevice(target, offset + 12345 - (12345 % 512), write);
    }
    await until(
      "the restore's pull to end",
      async () => (await volumeOn("node-b", "restored-1"))?.pull === undefined,
    );
    expect(sha(readDevice(target, 0, 16 * MiB))).toBe(sha(mine));
    await unstage(volume.volumeId);

    // A clone of the volume onto another node: through a hidden snapshot of it, copied over.
    const { volume: clone } = await createVolume("cloned-1", {
      volumeContentSource: { volume: { volumeId: src.id } },
      accessibilityRequirements: { requisite: [at("node-c")] },
    });
    expect(clone.volumeId).toBe("node-c/cloned-1");
    await until(
      "the clone's pull to end",
      async () => (await volumeOn("node-c", "cloned-1"))?.pull === undefined,
    );
    const cloneTarget = await stage("node-c", clone.volumeId);
    expect(sha(readDevice(cloneTarget, 0, 16 * MiB))).toBe(sha(src.content));
    await unstage(clone.volumeId);
    // The hidden snapshot is no CSI snapshot.
    const listed = await callCsi<{ entries: { snapshot: CsiSnapshotOutput }[] }>(ctl(), "ListSnapshots", {
      sourceVolumeId: src.id,
    });
    expect(listed.entries.map((e) => e.snapshot.snapshotId)).toEqual([snap.snapshotId]);
  });

  it("a pull survives its source's restart, and finishes from a replica when the source is gone for good", async () => {
    const src = await volumeWithData("src-2", "node-a");
    const { snapshot: snap } = await snapshot("snap-2", src.id, 1);
    const origin = snap.snapshotId;
    const [holder] = await until("the replica", async () => {
      const r = await completeReplicas(origin);
      return r.length === 1 ? r : undefined;
    });
    const others = NODES.filter((n) => n !== "node-a" && n !== holder);
    // Restore where there is no copy; kill the source mid-pull, restart it: the pull resumes.
    const { volume: v1 } = await createVolume("restored-2a", {
      volumeContentSource: { snapshot: { snapshotId: origin } },
      accessibilityRequirements: { requisite: [at(others[0]!)] },
    });
    await until("part of the pull", async () => {
      const v = await volumeOn(others[0]!, "restored-2a");
      return v?.pull && v.pull.pendingChunks < v.pull.totalChunks ? true : undefined;
    });
    await nodes.get("node-a")!.kill();
    nodes.set("node-a", await startNode("node-a"));
    await until(
      "the pull to finish after the restart",
      async () => (await volumeOn(others[0]!, "restored-2a"))?.pull === undefined,
    );
    const t1 = await stage(others[0]!, v1.volumeId);
    expect(sha(readDevice(t1, 0, 16 * MiB))).toBe(sha(src.content));
    await unstage(v1.volumeId);

    // Again, and this time the source stays down: the controller points the pull at the replica.
    const { volume: v2 } = await createVolume("restored-2b", {
      volumeContentSource: { snapshot: { snapshotId: origin } },
      accessibilityRequirements: { requisite: [at(others[1]!)] },
    });
    await nodes.get("node-a")!.kill();
    await until(
      "the pull to finish from the replica",
      async () => (await volumeOn(others[1]!, "restored-2b"))?.pull === undefined,
      90_000,
    );
    const t2 = await stage(others[1]!, v2.volumeId);
    expect(sha(readDevice(t2, 0, 16 * MiB))).toBe(sha(src.content));
    await unstage(v2.volumeId);
    nodes.set("node-a", await startNode("node-a"));
  });

  it("replicas=2 on 4 nodes: the snapshot outlives its node and its data; repair restores the copies", async () => {
    const src = await volumeWithData("src-3", "node-d");
    const { snapshot: snap } = await snapshot("snap-3", src.id, 2);
    const origin = snap.snapshotId;
    const holders = await until("two replicas", async () => {
      const r = await completeReplicas(origin);
      return r.length === 2 ? r : undefined;
    });
    await nodes.get("node-d")!.kill();
    rmSync(path.join(dir, "node-d"), { recursive: true, force: true });
    // A restore from the snapshot of a node that is gone, on a surviving node.
    const survivor = NODES.find((n) => n !== "node-d" && !holders.includes(n))!;
    const { volume } = await createVolume("restored-3", {
      volumeContentSource: { snapshot: { snapshotId: origin } },
      accessibilityRequirements: { requisite: [at(survivor)] },
    });
    await until(
      "the restore from the replicas",
      async () => (await volumeOn(survivor, "restored-3"))?.pull === undefined,
      90_000,
    );
    const target = await stage(survivor, volume.volumeId);
    expect(sha(readDevice(target, 0, 16 * MiB))).toBe(sha(src.content));
    await unstage(volume.volumeId);
    // Its node gone, the snapshot is kept on 1 + 2 nodes again: a third copy on the last survivor.
    const copies = await until(
      "repair",
      async () => {
        const r = await completeReplicas(origin, ["node-d"]);
        return r.length === 3 ? r : undefined;
      },
      90_000,
    );
    expect(copies.sort()).toEqual(NODES.filter((n) => n !== "node-d").sort());
    // The snapshot still answers as itself (GetSnapshot from a replica).
    const got = await callCsi<{ snapshot: CsiSnapshotOutput }>(ctl(), "GetSnapshot", {
      snapshotId: origin,
    }).catch(() => undefined);
    if (got) expect(got.snapshot.snapshotId).toBe(origin);
    nodes.set("node-d", await startNode("node-d"));

    // The operator's view: where the snapshot is kept now.
    const cli = spawnSync(
      process.execPath,
      [
        ...["--import", "tsx", "cmd/snapblock.ts", "replicas", "--json"],
        ...["--nodes", NODES.map((n) => `${n}=127.0.0.1:${ports.get(n)}`).join(",")],
        ...["--tls-ca", pki.controller.caFile, "--tls-cert", pki.controller.certFile],
        ...["--tls-key", pki.controller.keyFile],
      ],
      { cwd: ROOT, encoding: "utf8", timeout: 60_000 },
    );
    expect(cli.status, cli.stderr).toBe(0);
    const status = JSON.parse(cli.stdout) as {
      snapshots: {
        origin: string;
        wanted: number;
        atOrigin: boolean;
        replicas: { nodeId: string; complete: boolean }[];
      }[];
    };
    const entry = status.snapshots.find((s) => s.origin === origin);

    expect(entry, cli.stdout).toMatchObject({ wanted: 2, atOrigin: false });
    expect(
      entry!.replicas
        .filter((r) => r.complete)
        .map((r) => r.nodeId)
        .sort(),
    ).toEqual(copies.sort());
  });

  it("replicates incrementally: after changing 1% of a volume, only the changed chunks travel", async () => {
    const { volume } = await createVolume("src-4", {
      accessibilityRequirements: { requisite: [at("node-a")] },
      capacityRange: { requiredBytes: 64 * MiB },
    });
    let target = await stage("node-a", volume.volumeId);
    for (let offset = 0; offset < 64 * MiB; offset += 4 * MiB)
      writeDevice(target, offset, randomBytes(4 * MiB));
    await unstage(volume.volumeId);
    const { snapshot: s1 } = await snapshot("snap-4a", volume.volumeId, 1);
    const [holder] = await until("the first replica", async () => {
      const r = await completeReplicas(s1.snapshotId);
      return r.length === 1 ? r : undefined;
    });
    // 1% of 1024 chunks: 10 chunks rewritten.
    target = await stage("node-a", volume.volumeId);
    for (let i = 0; i < 10; i++) writeDevice(target, (i * 97 + 5) * CS, randomBytes(CS));
    await unstage(volume.volumeId);
    const { snapshot: s2 } = await snapshot("snap-4b", volume.volumeId, 1);
    const [holder2] = await until("the second replica", async () => {
      const r = await completeReplicas(s2.snapshotId);
      return r.length === 1 ? r : undefined;
    });
    // Replicas of one volume's snapshots go to the same nodes: the second starts from the first.
    expect(holder2, logsOf()).toBe(holder);
    const rep = await replicaOn(holder!, s2.snapshotId);
    expect(rep?.pull).toBeUndefined();
    const bytes = await until("the second replica's pull to be logged", () =>
      Promise.resolve(fetchedBytes(holder!, s2.snapshotId) || undefined),
    );
    expect(bytes).toBeGreaterThan(0);
    expect(bytes, logsOf()).toBeLessThanOrEqual(1.1 * 10 * CS);
  });

  it("a holder killed while its replica is still arriving, the snapshot deleted meanwhile: it drops the unfinished copy when it returns", async () => {
    const src = await volumeWithData("src-6", "node-b");
    const { snapshot: snap } = await snapshot("snap-6", src.id, 1);
    // The pull is rate-limited (2 MiB/s for 4 MiB): caught while chunks are still pending.
    const holder = await until("the replica to be on its way", async () => {
      for (const n of NODES) {
        const s = await replicaOn(n, snap.snapshotId).catch(() => undefined);
        if (s?.pull && s.pull.pendingChunks > 0) return n;
      }
      return undefined;
    });
    await nodes.get(holder)!.kill();
    await callCsi(ctl(), "DeleteSnapshot", { snapshotId: snap.snapshotId });
    // It comes back with its replica still pulling, from an origin that is gone: the tombstone
    // must not wait for that pull (it would wait forever).
    nodes.set(holder, await startNode(holder));
    await until("the returning holder to drop its unfinished replica", async () =>
      (await replicaOn(holder, snap.snapshotId)) === undefined ? true : undefined,
    );
    const got = await callCsi<{ entries: unknown[] }>(ctl(), "ListSnapshots", {
      snapshotId: snap.snapshotId,
    });
    expect(got.entries).toEqual([]);
  });

  it("DeleteSnapshot with a holder down: the holder drops its copy when it returns, and nothing leaks", async () => {
    const src = await volumeWithData("src-5", "node-b");
    const { snapshot: snap } = await snapshot("snap-5", src.id, 1);
    const [holder] = await until("the replica", async () => {
      const r = await completeReplicas(snap.snapshotId);
      return r.length === 1 ? r : undefined;
    });
    await nodes.get(holder!)!.kill();
    await callCsi(ctl(), "DeleteSnapshot", { snapshotId: snap.snapshotId });
    expect(await inspect("node-b").getSnapshot("snap-5")).toBeUndefined();
    nodes.set(holder!, await startNode(holder!));
    await until("the returning holder to drop its replica", async () =>
      (await replicaOn(holder!, snap.snapshotId)) === undefined ? true : undefined,
    );
    const got = await callCsi(ctl(), "ListSnapshots", { snapshotId: snap.snapshotId });
    expect((got as { entries: unknown[] }).entries).toEqual([]);

    // The same name taken again is a new snapshot: the tombstone of the old one does not bury it.
    const { snapshot: again } = await snapshot("snap-5", src.id, 1);
    expect(again.snapshotId).toBe(snap.snapshotId);
    await until("the new snapshot's replica", async () => {
      const r = await completeReplicas(again.snapshotId);
      return r.length === 1 ? r : undefined;
    });
    await new Promise((r) => setTimeout(r, 3000)); // a few repair passes
    const still = await callCsi<{ entries: unknown[] }>(ctl(), "ListSnapshots", {
      snapshotId: again.snapshotId,
    });
    expect(still.entries).toHaveLength(1);
    expect(await inspect("node-b").getSnapshot("snap-5")).toBeDefined();
    expect(await completeReplicas(again.snapshotId)).toHaveLength(1);

    // Every pool is consistent: stop everything and check each pool offline.
    for (const s of [...staged]) await unstage(s.volumeId);
    await controller.stop();
    for (const n of NODES) await nodes.get(n)!.stop();
    let replicaCount = 0;
    for (const n of NODES) {
      const poolDir = path.join(dir, n, "pool");
      if (!existsSync(poolDir)) continue;
      const pool = await Pool.open({ dir: poolDir });
      const report = await pool.check();
      await pool.close();
      expect(report.problems, n).toEqual([]);
      replicaCount += pool.listSnapshots().filter((s) => s.name === replicaName(snap.snapshotId)).length;
    }
    // Only the new snapshot's replica: the old one's copy on the holder that was down is gone.
    expect(replicaCount).toBe(1);
  });

  /** Bytes a node received for one origin, from its log of fills (see the engine's fill logging). */
  function fetchedBytes(node: string, origin: string): number {
    const lines = nodes
      .get(node)!
      .log.filter((l) => l.includes('"msg":"pull finished"') && l.includes(origin));
    const last = lines.at(-1);
    if (!last) return 0;
    return (JSON.parse(last) as { bytes: number }).bytes;
  }
});
