import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PoolUsageEvents } from "../../pkg/cluster/index.js";
import { LocalEngine, PVC_META, type EngineApi } from "../../pkg/engine-api/index.js";
import { EngineServer, RemoteEngine } from "../../pkg/engine-service/index.js";
import { KubeEventRecorder, type KubeApi, type KubeEvent } from "../../pkg/k8s/index.js";
import { createLogger, silentLogger } from "../../pkg/log/index.js";
import { makeTestPki } from "./test-certs.js";

const MiB = 2 ** 20;

/**
 * Recovery points deleted for space are loud in cluster mode: a node's real engine (a point every
 * second, points allowed 10 % of the free space) deletes its oldest points as a writer rewrites
 * the volume; the node logs a warning and reports the count through the engine service (GetCapacity
 * over mutual TLS); the controller's look at the pools raises one Warning Event on the volume's
 * PVC (through the real KubeEventRecorder to a fake KubeApi) with how many went and the share, and none again until
 * more go.
 */
describe("recovery points dropped for space", () => {
  let dir: string;
  let engine: LocalEngine;
  let server: EngineServer;
  let remote: RemoteEngine;
  const nodeLog: string[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "snapblock-points-dropped-"));
    const pki = makeTestPki(dir);
    engine = new LocalEngine({
      nodeId: "node-a",
      poolDir: path.join(dir, "pool"),
      metadataFile: path.join(dir, "meta.json"),
      createIfMissing: { sizeBytes: 16 * MiB },
      points: { maxShareOfFree: 0.1, tickMs: 100, spaceCheckMs: 0 },
      logger: createLogger({ level: "info", write: (line) => nodeLog.push(line) }),
    });
    await engine.open();
    server = await EngineServer.start({
      engine,
      snapshots: engine,
      address: "127.0.0.1:0",
      transport: { tls: pki.node("node-a") },
      version: "test",
      logger: silentLogger,
      pullGrants: { allows: () => false },
    });
    remote = new RemoteEngine({
      nodeId: "node-a",
      address: `127.0.0.1:${server.port}`,
      transport: { tls: pki.controller },
      callTimeoutMs: 5000,
    });
  });

  afterAll(async () => {
    remote?.close();
    await server?.shutdown(1000);
    await engine?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("warns the volume's PVC once per batch, with the count and the share", async () => {
    await engine.createVolume({
      name: "pvc-1",
      sizeBytes: MiB,
      meta: { [PVC_META.namespace]: "apps", [PVC_META.name]: "data" },
      protection: "1s for 1h",
    });
    // The Kubernetes API as the recorder sees it: the one call it makes, keeping what it is given
    // (pkg/k8s's FakeKube does the same; test/ reaches pkg/k8s only through its index).
    const kube = {
      events: [] as KubeEvent[],
      createEvent(e: KubeEvent) {
        this.events.push(e);
        return Promise.resolve();
      },
    };
    const events = new KubeEventRecorder({
      api: kube as unknown as KubeApi,
      source: "snapblock-controller",
      logger: silentLogger,
    });
    const controller = { nodeEngines: () => [remote] } as unknown as EngineApi;
    const watch = new PoolUsageEvents({ engine: controller, events, logger: silentLogger });
    const dropped = () => kube.events.filter((e) => e.reason === "RecoveryPointsDropped");

    // Nothing dropped yet: no Event.
    await watch.check();
    await events.flush();
    expect(dropped()).toEqual([]);

    // Rewrite the whole volume each second: every point then holds 1 MiB only it maps, and a few
    // of them exceed 10 % of the free space.
    const dev = engine.openVolumeDevice("pvc-1");
    let reported: number | undefined;
    try {
      for (let round = 1; round <= 30 && reported === undefined; round++) {
        await dev.write(0, Buffer.alloc(MiB, round));
        await new Promise((r) => setTimeout(r, 1100));
        reported = (await remote.capacity()).pointsDroppedForSpace?.find((d) => d.volume === "pvc-1")?.count;
      }
    } finally {
      dev.close();
    }
    expect(reported, "no point was dropped for space").toBeGreaterThan(0);
    // The engine's own count, through the engine service, with what the points held.
    const [d] = (await remote.capacity()).pointsDroppedForSpace!;
    expect(d).toMatchObject({ volume: "pvc-1", shareOfFree: 0.1 });
    expect(d!.heldBytes).toBeGreaterThan(d!.budgetBytes);
    expect(nodeLog.some((l) => l.includes("were deleted") && l.includes('"volume":"pvc-1"'))).toBe(true);

    await watch.check();
    await events.flush();
    const first = dropped();
    expect(first).toHaveLength(1);
    expect(first[0]).toMatchObject({
      type: "Warning",
      involved: { kind: "PersistentVolumeClaim", namespace: "apps", name: "data" },
      source: "snapblock-controller",
    });
    expect(first[0]!.message).toMatch(
      new RegExp(
        `^${d!.count} recovery point\\(s\\) of this volume were deleted, oldest first: .* node node-a .*10% of the pool's free space`,
      ),
    );
    // No news, no second Event.
    const count = (await remote.capacity()).pointsDroppedForSpace![0]!.count;
    await watch.check();
    await events.flush();
    expect(dropped()).toHaveLength(count === d!.count ? 1 : 2);
  });
});
