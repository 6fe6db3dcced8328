import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  PARAM_ALLOW_MODE_CHANGE,
  PARAM_FREEZE,
  callCsi,
  type CsiSnapshotOutput,
} from "../../pkg/csi/index.js";
import { runCommand } from "../../pkg/mount/index.js";
import { missingWrites, startFileWriter, type FileWriter } from "../csi/file-writer.js";
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
import { makeTestPki } from "./test-certs.js";
import { rootWithTools } from "../node-tools.js";
import { scrub } from "../node-layer/harness.js";

/**
 * Cluster mode: the controller holds no mount, so the freeze happens on the node that has the
 * volume staged, asked over the engine service (CreateSnapshot carries the VolumeSnapshotClass's
 * choice). One node plugin with a real block path, one controller, mutual TLS, a writer on the
 * staged filesystem; the restored snapshot needs no journal recovery. Needs root and the tools.
 */
const haveTools = rootWithTools(["nbdfuse", "losetup", "fsfreeze", "dumpe2fs"]);

const MiB = 2 ** 20;
const EXT4 = { mount: { fsType: "ext4" }, accessMode: { mode: "SINGLE_NODE_WRITER" } };
const BLOCK = { block: {}, accessMode: { mode: "SINGLE_NODE_WRITER" } };

describe.skipIf(!haveTools)("cluster mode: the node freezes what it has staged", () => {
  let dir: string;
  let node: SnapblockProcess;
  let controller: SnapblockProcess;
  let writer: FileWriter | undefined;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "sb-cluster-freeze-"));
    const pki = makeTestPki(dir);
    const cluster: TestCluster = { dir, pki, ports: new Map([["node-a", await freePort()]]) };
    node = await startSnapblock(
      nodeArgs(cluster, "node-a", { attach: "auto", poolSize: "512M" }),
      nodeSocket(cluster, "node-a"),
    );
    controller = await startSnapblock(
      controllerArgs(cluster, { callTimeoutSeconds: 60 }),
      controllerSocket(cluster),
    );
  });

  afterAll(async () => {
    let code: number | null | undefined;
    try {
      await writer?.stop();
      await controller?.stop();
      code = await node?.stop();
    } finally {
      // Whatever a failed test left staged, frozen or attached goes too (never rm through a mount).
      await scrub(dir);
    }
    expect(code).toBe(0);
  });

  const staged = (name: string) => ({
    staging: path.join(dir, "kubelet", "staging", name),
    target: path.join(dir, "kubelet", "pods", name, "volume"),
  });

  async function stage(volumeId: string, cap: object, name: string) {
    const p = staged(name);
    mkdirSync(p.staging, { recursive: true });
    mkdirSync(path.dirname(p.target), { recursive: true });
    const req = { volumeId, stagingTargetPath: p.staging, volumeCapability: cap };
    await callCsi(node.clients.node, "NodeStageVolume", req, 120_000);
    await callCsi(node.clients.node, "NodePublishVolume", { ...req, targetPath: p.target });
    return p;
  }

  async function unstage(volumeId: string, p: { staging: string; target: string }) {
    await callCsi(node.clients.node, "NodeUnpublishVolume", { volumeId, targetPath: p.target });
    await callCsi(node.clients.node, "NodeUnstageVolume", { volumeId, stagingTargetPath: p.staging }, 60_000);
  }

  const froze = () =>
    node.log.filter((l) => l.startsWith("{") && l.includes('"froze the filesystem for a snapshot"')).length;

  it("CreateSnapshot through the controller freezes the filesystem staged on the node", async () => {
    const volumeId = (
      await callCsi<{ volume: { volumeId: string } }>(controller.clients.controller, "CreateVolume", {
        name: "pvc-remote",
        volumeCapabilities: [EXT4],
        capacityRange: { requiredBytes: 64 * MiB },
      })
    ).volume.volumeId;
    expect(volumeId.startsWith("node-a/")).toBe(true);
    const p = await stage(volumeId, EXT4, "remote");
    writer = startFileWriter(p.target);
    await writer.waitFor(20);

    const ackedBefore = writer.acked();
    const frozen = (
      await callCsi<{ snapshot: CsiSnapshotOutput }>(controller.clients.controller, "CreateSnapshot", {
        name: "snap-remote",
        sourceVolumeId: volumeId,
      })
    ).snapshot;
    expect(froze()).toBe(1);
    await callCsi(controller.clients.controller, "CreateSnapshot", {
      name: "snap-remote-as-is",
      sourceVolumeId: volumeId,
      parameters: { [PARAM_FREEZE]: "false" },
    });
    expect(froze()).toBe(1);
    await writer.waitFor(writer.acked() + 10);
    await writer.stop();
    writer = undefined;

    // The frozen snapshot, restored and attached raw: no needs_recovery, every acknowledged file.
    const restored = (
      await callCsi<{ volume: { volumeId: string } }>(controller.clients.controller, "CreateVolume", {
        name: "pvc-remote-restored",
        volumeCapabilities: [BLOCK],
        // Read the filesystem's blocks raw, to look at its journal (volume-mode.ts: an opt-in).
        parameters: { [PARAM_ALLOW_MODE_CHANGE]: "true" },
        volumeContentSource: { snapshot: { snapshotId: frozen.snapshotId } },
      })
    ).volume.volumeId;
    const r = await stage(restored, BLOCK, "remote-restored");
    const header = execFileSync("dumpe2fs", ["-h", r.target], {
      stdio: ["ignore", "pipe", "ignore"],
    }).toString();
    expect(/^Filesystem features:.*\bneeds_recovery\b/m.test(header)).toBe(false);
    const mnt = path.join(dir, "check");
    mkdirSync(mnt, { recursive: true });
    await runCommand({ command: "mount", args: ["-t", "ext4", "-o", "ro,noload", r.target, mnt] });
    try {
      expect(missingWrites(mnt, ackedBefore)).toEqual([]);
    } finally {
      await runCommand({ command: "umount", args: [mnt] });
    }
    await unstage(restored, r);
    await unstage(volumeId, p);
  });
});
