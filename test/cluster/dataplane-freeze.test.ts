import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callCsi, type CsiClients } from "../../pkg/csi/index.js";
import { rootWithTools } from "../node-tools.js";
import { scrub } from "../node-layer/harness.js";
import { startSplitNode, type Child, type SplitNode } from "./split-node.js";

/**
 * With the node split in two, the data plane freezes a staged filesystem for a snapshot: it takes
 * the snapshot and is always there, while the node plugin may be restarting. The node plugin's
 * unmount holds the volume (HoldVolume), which keeps freezes out; a holder that goes away without
 * a word (its connection closes, as when the node plugin is SIGKILLed) releases it.
 */
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const haveTools = rootWithTools(["nbdfuse", "losetup", "mkfs.ext4", "fsfreeze"]);

const EXT4 = { mount: { fsType: "ext4" }, accessMode: { mode: "SINGLE_NODE_WRITER" } };

describe.skipIf(!haveTools)("snapshot freezes on a split node", () => {
  let dir: string;
  let node: SplitNode;
  let plugin: { process: Child; clients: CsiClients } | undefined;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "sb-dp-freeze-"));
    node = await startSplitNode(dir);
    plugin = await node.startPlugin({ ready: true });
  }, 120_000);

  afterAll(async () => {
    let code: number | null | undefined = 0;
    try {
      plugin?.clients.close();
      await plugin?.process.stop();
      if (node) {
        code = await node.dataplaneProcess.stop();
        node.close();
      }
    } finally {
      // Whatever a failed test left staged, frozen or attached goes too (never rm through a mount).
      await scrub(dir);
    }
    expect(code).toBe(0);
  });

  it("freezes in the data plane, waits for a hold, and a vanished holder releases it", async () => {
    await node.engine.createVolume({ name: "frozen", sizeBytes: 128 * 2 ** 20, meta: {} });
    const volumeId = `${node.nodeId}/frozen`;
    const staging = path.join(node.kubelet, "staging", "frozen");
    mkdirSync(staging, { recursive: true });
    const req = { volumeId, stagingTargetPath: staging, volumeCapability: EXT4 };
    await callCsi(plugin!.clients.node, "NodeStageVolume", req, 120_000);

    await node.engine.createSnapshot({ volume: "frozen", name: "s1", meta: {} });
    expect(node.dataplaneProcess.log.join("\n")).toMatch(
      /"froze the filesystem for a snapshot".*"volume":"frozen"/,
    );

    // A holder killed mid-hold: the snapshot waits for it, then goes ahead once its connection closes.
    const holder = spawn(
      process.execPath,
      ["--import", "tsx", path.join(ROOT, "test/cluster/hold-volume.ts"), node.dataplaneSocket, "frozen"],
      { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] },
    );
    const exited = once(holder, "exit");
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.setEncoding("utf8").on("data", (t: string) => t.includes("held") && resolve());
        holder.once("exit", () => reject(new Error("the holder exited before holding")));
      });
      let snapshotDone = false;
      const snapshot = node.engine
        .createSnapshot({ volume: "frozen", name: "s2", meta: {} })
        .then(() => (snapshotDone = true));
      await new Promise((r) => setTimeout(r, 1500));
      expect(snapshotDone).toBe(false);
      process.kill(holder.pid!, "SIGKILL");
      await snapshot;
      expect(snapshotDone).toBe(true);
    } finally {
      if (holder.exitCode === null && holder.signalCode === null) process.kill(holder.pid!, "SIGKILL");
      await exited;
    }

    await callCsi(plugin!.clients.node, "NodeUnstageVolume", { volumeId, stagingTargetPath: staging });
    expect(await node.dataPlane.find("frozen")).toBeUndefined();
  }, 120_000);
});
