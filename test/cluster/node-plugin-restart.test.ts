import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callCsi, type CsiClients } from "../../pkg/csi/index.js";
import { checkFilesystem } from "../../pkg/mount/index.js";
import { missingWrites, startFileWriter, type FileWriter } from "../csi/file-writer.js";
import { rootWithTools } from "../node-tools.js";
import { startSplitNode, type Child, type SplitNode } from "./split-node.js";

/**
 * The node plugin holds nothing I/O depends on (docs/design.md, "Processes of a node"): an ext4
 * volume staged and published through nbdfuse + loop by a node plugin over its data plane, a
 * writer that fsyncs every file before acknowledging it, and the node plugin SIGKILLed 20 times
 * at random moments (starting up, idle, in the middle of a publish) and started again each time.
 * The writer sees no error, every acknowledged file reads back as written, the restarted plugin
 * unpublishes and unstages, and e2fsck finds the filesystem clean. Needs root and the tools.
 */
const haveTools = rootWithTools(["nbdfuse", "losetup", "mkfs.ext4", "e2fsck"]);

const EXT4 = { mount: { fsType: "ext4" }, accessMode: { mode: "SINGLE_NODE_WRITER" } };
const KILLS = 20;

describe.skipIf(!haveTools)("a node plugin killed and restarted under a running writer", () => {
  let dir: string;
  let node: SplitNode;
  let writer: FileWriter | undefined;
  let plugin: { process: Child; clients: CsiClients } | undefined;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "sb-plugin-kill-"));
    node = await startSplitNode(dir);
  }, 90_000);

  afterAll(async () => {
    await writer?.stop();
    plugin?.clients.close();
    await plugin?.process.kill();
    if (node) {
      // Whatever a failed run left: the data plane's SIGTERM drains its exports; mounts go with the directory.
      expect(await node.dataplaneProcess.stop()).toBe(0);
      node.close();
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it("sees no I/O error, loses no acknowledged write, and unstages cleanly afterwards", async () => {
    await node.engine.createVolume({ name: "data", sizeBytes: 256 * 2 ** 20, meta: {} });
    const volumeId = `${node.nodeId}/data`;
    const staging = path.join(node.kubelet, "staging", "data");
    const target = path.join(node.kubelet, "pods", "p1", "volume");
    const second = path.join(node.kubelet, "pods", "p2", "volume");
    mkdirSync(staging, { recursive: true });
    mkdirSync(path.dirname(target), { recursive: true });
    mkdirSync(path.dirname(second), { recursive: true });
    const stageReq = { volumeId, stagingTargetPath: staging, volumeCapability: EXT4 };

    plugin = await node.startPlugin({ ready: true });
    await callCsi(plugin.clients.node, "NodeStageVolume", stageReq, 120_000);
    await callCsi(plugin.clients.node, "NodePublishVolume", { ...stageReq, targetPath: target });
    writer = startFileWriter(target);
    await writer.waitFor(5);

    const ackedBefore = writer.acked();
    let readyRestarts = 0;
    for (let i = 0; i < KILLS; i++) {
      if (i % 4 === 3) {
        // A restarted plugin carries on: it answers for the volume, and a publish killed half-way
        // is finished (or undone) by the next plugin.
        plugin = await node.startPlugin({ ready: true });
        readyRestarts++;
        const stats = await callCsi<{ volumeCondition: { abnormal: boolean; message: string } }>(
          plugin.clients.node,
          "NodeGetVolumeStats",
          { volumeId, volumePath: target },
        );
        expect(stats.volumeCondition).toMatchObject({ abnormal: false });
        const publishing = callCsi(plugin.clients.node, "NodePublishVolume", {
          ...stageReq,
          targetPath: second,
        }).catch(() => undefined);
        await new Promise((r) => setTimeout(r, Math.random() * 150));
        plugin.clients.close();
        await plugin.process.kill();
        await publishing;
        plugin = await node.startPlugin({ ready: true });
        await callCsi(plugin.clients.node, "NodePublishVolume", { ...stageReq, targetPath: second });
        await callCsi(plugin.clients.node, "NodeUnpublishVolume", { volumeId, targetPath: second });
        expect(missingWrites(target, writer.acked())).toEqual([]);
      } else {
        plugin = await node.startPlugin();
        await new Promise((r) => setTimeout(r, 100 + Math.random() * 1400));
      }
      plugin.clients.close();
      await plugin.process.kill();
      plugin = undefined;
    }
    // The writer kept writing through every restart, and never saw an error (it exits on one).
    await writer.waitFor(writer.acked() + 5);
    expect(writer.acked()).toBeGreaterThan(ackedBefore);
    expect(readyRestarts).toBe(KILLS / 4);
    await writer.stop();
    const acked = writer.acked();
    writer = undefined;
    expect(missingWrites(target, acked)).toEqual([]);

    plugin = await node.startPlugin({ ready: true });
    await callCsi(plugin.clients.node, "NodeUnpublishVolume", { volumeId, targetPath: target });
    await callCsi(plugin.clients.node, "NodeUnstageVolume", { volumeId, stagingTargetPath: staging });
    expect(await node.dataPlane.find("data")).toBeUndefined();

    // The filesystem, checked unmounted through a fresh attachment of the data plane.
    const attachment = await node.dataPlane.attach({ engineName: "data", label: volumeId });
    try {
      const fsck = await checkFilesystem({ device: attachment.devicePath!, fsType: "ext4" });
      expect(fsck.output).toMatch(/clean|files/);
      expect(fsck.clean, fsck.output).toBe(true);
    } finally {
      await node.dataPlane.detach("data");
    }
    console.log(
      `node plugin SIGKILLed ${KILLS} times (${readyRestarts} while serving calls): ${acked} fsynced files written and verified, 0 I/O errors`,
    );
  }, 240_000);
});
