import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callCsi, type CsiClients } from "../../pkg/csi/index.js";
import { missingWrites, startFileWriter, type FileWriter } from "../csi/file-writer.js";
import { rootWithTools } from "../node-tools.js";
import { freePort } from "./cluster-processes.js";
import { startSplitNode, type Child, type SplitNode } from "./split-node.js";

/**
 * The data plane SIGKILLed under a volume staged through nbdfuse + loop, which cannot reconnect:
 * once the data plane is back, the volume says it is broken, and what to do, everywhere (the
 * node's volume condition, the engine's volume that ControllerGetVolume shows, the data plane's
 * metrics, the node plugin's log) within seconds; unstaging and staging it again heals it, and
 * every file fsynced before the kill is there. Needs root and the tools.
 */
const haveTools = rootWithTools(["nbdfuse", "losetup", "mkfs.ext4"]);

const EXT4 = { mount: { fsType: "ext4" }, accessMode: { mode: "SINGLE_NODE_WRITER" } };

async function within<T>(ms: number, what: string, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe.skipIf(!haveTools)("a data plane killed under a staged volume (nbdfuse + loop)", () => {
  let dir: string;
  let node: SplitNode;
  let writer: FileWriter | undefined;
  let plugin: { process: Child; clients: CsiClients } | undefined;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "sb-dp-kill-"));
    node = await startSplitNode(dir);
  }, 90_000);

  afterAll(async () => {
    await writer?.stop();
    plugin?.clients.close();
    await plugin?.process.stop();
    if (node) {
      await node.dataplaneProcess.stop();
      node.close();
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it("reports the volume broken everywhere within seconds, and heals on unstage/stage without losing a write", async () => {
    await node.engine.createVolume({ name: "data", sizeBytes: 256 * 2 ** 20, meta: {} });
    const volumeId = `${node.nodeId}/data`;
    const staging = path.join(node.kubelet, "staging", "data");
    const target = path.join(node.kubelet, "pods", "p1", "volume");
    mkdirSync(staging, { recursive: true });
    mkdirSync(path.dirname(target), { recursive: true });
    const stageReq = { volumeId, stagingTargetPath: staging, volumeCapability: EXT4 };
    const publishReq = { ...stageReq, targetPath: target };
    plugin = await node.startPlugin({ ready: true });
    const csi = plugin.clients.node;
    await callCsi(csi, "NodeStageVolume", stageReq, 120_000);
    await callCsi(csi, "NodePublishVolume", publishReq);
    writer = startFileWriter(target);
    await writer.waitFor(10);

    await node.dataplaneProcess.kill();
    const ackedAtKill = writer.acked();
    const metricsPort = await freePort();
    await node.startDataPlane({ metricsPort });
    const restarted = Date.now();

    // Everywhere, within seconds, with what to do.
    const stats = await within(15_000, "NodeGetVolumeStats abnormal", async () => {
      const s = await callCsi<{ volumeCondition: { abnormal: boolean; message: string } }>(
        csi,
        "NodeGetVolumeStats",
        { volumeId, volumePath: target },
      );
      return s.volumeCondition.abnormal ? s : undefined;
    });
    expect(stats.volumeCondition.message).toMatch(/broken.*unstage and stage it again/);
    const volume = await within(15_000, "the engine's volume says broken", async () => {
      const v = await node.engine.getVolume("data");
      return v?.attachmentProblem === undefined ? undefined : v;
    });
    expect(volume.attachmentProblem).not.toBe("");
    const metrics = await within(15_000, "metrics count the broken device", async () => {
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      return /snapblock_node_attachments\{state="broken"\} 1/.test(text) ? text : undefined;
    });
    expect(metrics).toMatch(/snapblock_node_attachments\{state="ok"\} 0/);
    await within(15_000, "the node plugin logs it", () =>
      Promise.resolve(
        plugin!.process.log.some((l) => l.includes("block device is broken") && l.includes('"volume":"data"'))
          ? true
          : undefined,
      ),
    );
    expect(
      node.dataplaneProcess.log.some((l) => l.includes("block device is broken after the restart")),
    ).toBe(true);
    const reportedMs = Date.now() - restarted;

    // The writer saw its device die (or is stuck on it): what it acknowledged is what must survive.
    await writer.stop();
    const acked = Math.max(ackedAtKill, writer.acked());
    writer = undefined;

    // Heal: what Kubernetes does when the pod is deleted and made again.
    await callCsi(csi, "NodeUnpublishVolume", { volumeId, targetPath: target });
    await callCsi(csi, "NodeUnstageVolume", { volumeId, stagingTargetPath: staging });
    await callCsi(csi, "NodeStageVolume", stageReq, 120_000);
    await callCsi(csi, "NodePublishVolume", publishReq);
    expect(missingWrites(target, acked)).toEqual([]);
    const healthy = await callCsi<{ volumeCondition: { abnormal: boolean } }>(csi, "NodeGetVolumeStats", {
      volumeId,
      volumePath: target,
    });
    expect(healthy.volumeCondition.abnormal).toBe(false);
    await within(15_000, "the engine's volume is healthy again", async () =>
      (await node.engine.getVolume("data"))?.attachmentProblem === undefined ? true : undefined,
    );
    await callCsi(csi, "NodeUnpublishVolume", { volumeId, targetPath: target });
    await callCsi(csi, "NodeUnstageVolume", { volumeId, stagingTargetPath: staging });
    console.log(
      `data plane SIGKILLed: broken reported everywhere ${reportedMs} ms after its restart; healed by unstage/stage, ${acked} fsynced files all there`,
    );
  }, 240_000);
});
