import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_PLUGIN_NAME, TOPOLOGY_KEY, callCsi } from "../../pkg/csi/index.js";
import { RemoteEngine } from "../../pkg/engine-service/index.js";
import { OperatorClient } from "../../pkg/operator/index.js";
import { toGrpcStatus } from "../../pkg/rpc/index.js";
import { runCli } from "../cli/run-cli.js";
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
import { startFakeApiServer, type FakeApiServer } from "./fake-api-server.js";
import { makeTestPki } from "./test-certs.js";

const NODES = ["node-a", "node-b"] as const;
const MiB = 2 ** 20;
const BLOCK = { block: {}, accessMode: { mode: "SINGLE_NODE_WRITER" } };
const KEY = "snapblock.dev/protection";

interface SnapshotOut {
  snapshotId: string;
  sourceVolumeId: string;
}

/**
 * Pinned recovery points in cluster mode, with real processes: two node plugins (mutual TLS) and
 * a controller. A point taken on node-b is exported through the controller's socket as a user
 * does (`snapblock volume points --at --kubernetes`), which pins it on node-b through the engine
 * service; node-b's thinning then leaves it until DeleteSnapshot or `volume unpin`. The controller
 * also runs --pin-exported-points against a fake API server (plain HTTP on loopback, the real
 * Kubernetes client): a VolumeSnapshotContent written by hand pins its point too.
 */
describe("cluster mode: pinned recovery points", () => {
  let c: TestCluster;
  const nodes: SnapblockProcess[] = [];
  let controller: SnapblockProcess | undefined;
  let operator: OperatorClient | undefined;
  let api: FakeApiServer | undefined;
  const engines: RemoteEngine[] = [];

  beforeAll(async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "snapblock-point-pins-"));
    const ports = new Map<string, number>();
    for (const n of NODES) ports.set(n, await freePort());
    c = { dir, pki: makeTestPki(dir), ports };
    nodes.push(...(await Promise.all(NODES.map((n) => startSnapblock(nodeArgs(c, n), nodeSocket(c, n))))));
    api = await startFakeApiServer(dir);
    controller = await startSnapblock(
      controllerArgs(c, { extra: ["--pin-exported-points", "--pin-poll", "1"] }),
      controllerSocket(c),
      { env: { KUBECONFIG: api.kubeconfig } },
    );
    operator = new OperatorClient(controllerSocket(c));
  });

  afterAll(async () => {
    operator?.close();
    for (const e of engines) e.close();
    const started = [controller, ...nodes].filter((p): p is SnapblockProcess => p !== undefined);
    await Promise.all(started.map((p) => p.stop().catch(() => null)));
    await api?.close();
    rmSync(c.dir, { recursive: true, force: true });
  });

  const csi = <Res>(method: string, request: object) =>
    callCsi<Res>(controller!.clients.controller, method, request);
  /** node-b's engine service, as the holder of `tls` (the controller's or another node's certificate). */
  const nodeB = (tls: { caFile: string; certFile: string; keyFile: string }): RemoteEngine => {
    const e = new RemoteEngine({
      nodeId: "node-b",
      address: `127.0.0.1:${c.ports.get("node-b")}`,
      transport: { tls },
      callTimeoutMs: 5000,
    });
    engines.push(e);
    return e;
  };
  const cli = async (...args: string[]) => {
    const res = await runCli(controllerSocket(c), args, { cwd: c.dir });
    if (res.code !== 0) throw new Error(`snapblock ${args.join(" ")} exited ${res.code}: ${res.stderr}`);
    return res;
  };
  const pointIds = async (volumeId: string): Promise<string[]> =>
    (
      await csi<{ entries: Array<{ snapshot: SnapshotOut }> }>("ListSnapshots", { sourceVolumeId: volumeId })
    ).entries
      .map((e) => e.snapshot.snapshotId)
      .filter((id) => id.includes("/rp--"));
  /** Polls (the node's scheduler ticks once a second) until `done` holds of the volume's points, 20 s at most. */
  const waitPoints = async (volumeId: string, what: string, done: (ids: string[]) => boolean) => {
    const until = Date.now() + 20_000;
    for (;;) {
      const ids = await pointIds(volumeId);
      if (done(ids)) return ids;
      if (Date.now() > until) throw new Error(`${what} within 20 s; points: ${ids.join(", ")}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  };

  /**
   * Grows the 1 MiB volume twice (each expand brings a new point) and waits until the policy
   * ("1s for 2s") thins the second point: what remains is `first` (pinned) and the third.
   * Returns the third point and the grow step, for a test that goes on.
   */
  const expectSecondOfThreeThinned = async (volumeId: string, first: string) => {
    let size = MiB;
    const grow = () =>
      csi("ControllerExpandVolume", {
        volumeId,
        capacityRange: { requiredBytes: (size += MiB) },
        volumeCapability: BLOCK,
      });
    await grow();
    const [second] = (await waitPoints(volumeId, "no second point", (ids) => ids.length >= 2)).filter(
      (id) => id !== first,
    );
    await grow();
    const third = (
      await waitPoints(volumeId, "no third point", (ids) => ids.some((id) => id !== first && id !== second))
    ).find((id) => id !== first && id !== second)!;
    expect(await waitPoints(volumeId, `${second} not thinned`, (ids) => !ids.includes(second!))).toEqual([
      first,
      third,
    ]);
    return { third, grow };
  };

  it(
    "pins a point on its node through the controller; thinning leaves it until DeleteSnapshot or unpin",
    { timeout: 120_000 },
    async () => {
      const { volume } = await csi<{ volume: { volumeId: string } }>("CreateVolume", {
        name: "pvc-guarded",
        volumeCapabilities: [BLOCK],
        capacityRange: { requiredBytes: MiB },
        parameters: { [KEY]: "1s for 2s" },
        accessibilityRequirements: { requisite: [{ segments: { [TOPOLOGY_KEY]: "node-b" } }] },
      });
      const volumeId = volume.volumeId;
      expect(volumeId).toBe("node-b/pvc-guarded");
      const [first] = await waitPoints(volumeId, "no first point", (ids) => ids.length > 0);

      // The export as a user makes it, against the controller's socket: the point is pinned first.
      const exported = await cli(
        ...["volume", "points", volumeId, "--at", new Date().toISOString(), "--kubernetes"],
      );
      expect(exported.stderr).toContain(`pinned recovery point ${first}`);
      expect(exported.stdout).toContain("deletionPolicy: Delete");
      expect(exported.stdout).toContain(`snapshotHandle: "${first}"`);
      expect(await operator!.listPinnedPoints(volumeId)).toEqual({ snapshotIds: [first] });
      // The pin is on node-b, where the point is thinned, and its engine service says so.
      const firstName = first!.split("/")[1]!;
      expect((await nodeB(c.pki.controller).getSnapshot(firstName))?.pinned).toBe(true);
      // Another node's certificate may not touch it (unpinning would let node-b thin it).
      const denied = await nodeB(c.pki.node("node-a"))
        .pinPoint(firstName, false)
        .catch((e: unknown) => e);
      expect(toGrpcStatus(denied).codeName).toBe("PERMISSION_DENIED");
      expect((await nodeB(c.pki.controller).getSnapshot(firstName))?.pinned).toBe(true);
      // The controller's operator service has the pins only: exports and volume states are a node's.
      const noInfo = await failureCode(operator!.getInfo());
      expect(noInfo.code).toBe(status.UNIMPLEMENTED);
      expect(noInfo.details).toMatch(/Operator service has only the pins.*GetInfo needs `snapblock local`/);
      // An id of a node the controller does not know: UNAVAILABLE, never a silent "not found".
      expect((await failureCode(operator!.setPointPinned("node-z/rp--x-1", true))).code).toBe(
        status.UNAVAILABLE,
      );

      // A volume that grows differs from its points: each expand brings a new one. "1s for 2s"
      // keeps only points younger than 2 s besides the newest: the second goes, the first stays.
      const { third, grow } = await expectSecondOfThreeThinned(volumeId, first!);

      // What csi-snapshotter sends when the VolumeSnapshotContent (deletionPolicy Delete) goes:
      // the point is deleted with its pin; a second call is OK (CSI spec).
      for (let i = 0; i < 2; i++) expect(await csi("DeleteSnapshot", { snapshotId: first })).toEqual({});
      expect(await pointIds(volumeId)).not.toContain(first);
      expect(await nodeB(c.pki.controller).getSnapshot(firstName)).toBeUndefined();
      const gone = await failureCode(operator!.setPointPinned(first!, false));
      expect(gone.code).toBe(status.NOT_FOUND);
      expect(gone.details).toMatch(/thinned by its policy, or deleted/);

      // Pinned through the operator service, listed as pinned by the CLI, released by `volume
      // unpin`: node-b thins it once a newer point exists.
      expect(await operator!.setPointPinned(third, true)).toEqual({ pinned: true });
      const listed = JSON.parse((await cli("volume", "points", volumeId, "--json")).stdout) as Array<{
        snapshotId: string;
        pinned?: boolean;
      }>;
      expect(listed.find((p) => p.snapshotId === third)?.pinned).toBe(true);
      expect(JSON.parse((await cli("volume", "unpin", third, "--json")).stdout)).toEqual({
        snapshotId: third,
        pinned: false,
      });
      expect(await operator!.listPinnedPoints(volumeId)).toEqual({ snapshotIds: [] });
      await grow();
      await waitPoints(volumeId, `${third} not thinned after unpin`, (ids) => !ids.includes(third));
    },
  );
  it(
    "pins the point a hand-written VolumeSnapshotContent names (--pin-exported-points); one whose point is gone gets a Warning Event",
    { timeout: 120_000 },
    async () => {
      const { volume } = await csi<{ volume: { volumeId: string } }>("CreateVolume", {
        name: "pvc-by-hand",
        volumeCapabilities: [BLOCK],
        capacityRange: { requiredBytes: MiB },
        parameters: { [KEY]: "1s for 2s" },
        accessibilityRequirements: { requisite: [{ segments: { [TOPOLOGY_KEY]: "node-b" } }] },
      });
      const volumeId = volume.volumeId;
      const [first] = await waitPoints(volumeId, "no first point", (ids) => ids.length > 0);
      const firstName = first!.split("/")[1]!;
      // What a user or a backup tool applies without the CLI (so nothing pinned the point yet).
      const content = (name: string, snapshotHandle: string) => ({
        apiVersion: "snapshot.storage.k8s.io/v1",
        kind: "VolumeSnapshotContent",
        metadata: { name, uid: `uid-${name}` },
        spec: {
          driver: DEFAULT_PLUGIN_NAME,
          deletionPolicy: "Retain",
          source: { snapshotHandle },
          volumeSnapshotRef: { name, namespace: "default" },
        },
      });
      expect((await nodeB(c.pki.controller).getSnapshot(firstName))?.pinned ?? false).toBe(false);
      api!.contents.set("by-hand", content("by-hand", first!));
      api!.contents.set("gone", content("gone", "node-b/rp--999-1000"));

      const until = async (what: string, done: () => Promise<boolean> | boolean) => {
        const deadline = Date.now() + 20_000;
        while (!(await done())) {
          if (Date.now() > deadline) throw new Error(`${what} within 20 s\n${controller!.log.join("\n")}`);
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
      };
      await until(
        "the point not pinned",
        async () => (await nodeB(c.pki.controller).getSnapshot(firstName))?.pinned === true,
      );
      await until("no Event on the content whose point is gone", () =>
        api!.events.some((e) => e.involvedObject.name === "gone"),
      );
      expect(api!.events).toHaveLength(1);
      expect(api!.events[0]).toMatchObject({
        namespace: "default",
        type: "Warning",
        reason: "RecoveryPointMissing",
        involvedObject: { kind: "VolumeSnapshotContent", name: "gone" },
      });
      expect(api!.events[0]!.message).toContain("recovery point node-b/rp--999-1000 no longer exists");
      // Listed from the API server's cache, and nothing but the list and the Event was asked for.
      expect(api!.requests).toContain(
        "GET /apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents?resourceVersion=0",
      );
      expect(
        api!.requests.every((r) => r.includes("/volumesnapshotcontents?") || r.endsWith("/events")),
      ).toBe(true);

      // Thinning past the policy ("1s for 2s") leaves it, as it leaves a point the CLI pinned.
      await expectSecondOfThreeThinned(volumeId, first!);
      // Still one Event: a lasting condition is reported once.
      expect(api!.events).toHaveLength(1);
    },
  );
});
