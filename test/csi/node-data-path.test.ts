import { execFileSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  closeSync,
  fsyncSync,
  readFileSync,
  writeSync,
  readSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callCsi } from "../../pkg/csi/index.js";
import { OperatorClient } from "../../pkg/operator/index.js";
import { MiB, createSnapshot, createVolume } from "./csi-fixtures.js";
import { failureCode, removeDataDir, startLocal, type LocalProcess } from "./local-process.js";
import { freePort } from "../cluster/cluster-processes.js";
import { rootWithTools } from "../node-tools.js";

/**
 * The whole story through the real binary and real mounts: create -> stage + publish (NBD export
 * -> nbdfuse/loop or nbd-client -> mkfs -> mount -> bind) -> write -> snapshot -> write more ->
 * restore -> stage + publish -> the files as at snapshot time -> clone -> delete everything in an
 * arbitrary order -> nothing left mounted, attached or allocated. With ext4, xfs and raw block.
 * Needs root and the node tools (see .ci/run); skipped otherwise.
 */
const haveTools = rootWithTools(["nbdfuse", "losetup", "mkfs.xfs"]);

let local: LocalProcess;
let kubelet: string;
beforeAll(async () => {
  if (!haveTools) return;
  const dataDir = mkdtempSync(path.join(tmpdir(), "sb-node-"));
  kubelet = path.join(dataDir, "kubelet");
  local = await startLocal({ dataDir, args: ["--path-root", kubelet, "--pool-size", "2G"] });
});
afterAll(async () => {
  if (!haveTools) return;
  await local.stop();
  removeDataDir(local.dataDir);
});

const mountsUnder = (dir: string) =>
  readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter((l) => l.includes(dir));
const loopsOf = (dir: string) =>
  execFileSync("losetup", ["-a"])
    .toString()
    .split("\n")
    .filter((l) => l.includes(dir));

function capability(kind: "ext4" | "xfs" | "block") {
  return kind === "block"
    ? { block: {}, accessMode: { mode: "SINGLE_NODE_WRITER" } }
    : { mount: { fsType: kind }, accessMode: { mode: "SINGLE_NODE_WRITER" } };
}

async function stageAndPublish(volumeId: string, kind: "ext4" | "xfs" | "block", pod: string) {
  const staging = path.join(kubelet, "staging", volumeId.replace("/", "_"));
  const target = path.join(kubelet, "pods", pod, "volume");
  mkdirSync(staging, { recursive: true });
  mkdirSync(path.dirname(target), { recursive: true });
  const cap = capability(kind);
  await callCsi(
    local.clients.node,
    "NodeStageVolume",
    { volumeId, stagingTargetPath: staging, volumeCapability: cap },
    120_000,
  );
  await callCsi(
    local.clients.node,
    "NodeStageVolume",
    { volumeId, stagingTargetPath: staging, volumeCapability: cap },
    120_000,
  );
  await callCsi(local.clients.node, "NodePublishVolume", {
    volumeId,
    stagingTargetPath: staging,
    targetPath: target,
    volumeCapability: cap,
  });
  await callCsi(local.clients.node, "NodePublishVolume", {
    volumeId,
    stagingTargetPath: staging,
    targetPath: target,
    volumeCapability: cap,
  });
  return { staging, target };
}

async function unpublishAndUnstage(volumeId: string, p: { staging: string; target: string }) {
  for (let i = 0; i < 2; i++)
    await callCsi(local.clients.node, "NodeUnpublishVolume", { volumeId, targetPath: p.target });
  for (let i = 0; i < 2; i++)
    await callCsi(
      local.clients.node,
      "NodeUnstageVolume",
      { volumeId, stagingTargetPath: p.staging },
      60_000,
    );
  expect(existsSync(p.target)).toBe(false);
}

/** Writes through the published path and makes it durable (fsync), as an application would. */
function writeData(kind: "ext4" | "xfs" | "block", target: string, text: string) {
  if (kind === "block") {
    const fd = openSync(target, "r+");
    const buf = Buffer.alloc(4096);
    buf.write(text);
    writeSync(fd, buf, 0, 4096, 1 * MiB);
    fsyncSync(fd);
    closeSync(fd);
  } else {
    writeFileSync(path.join(target, "data.txt"), text);
    const fd = openSync(path.join(target, "data.txt"), "r");
    fsyncSync(fd);
    closeSync(fd);
  }
}

function readData(kind: "ext4" | "xfs" | "block", target: string): string {
  if (kind === "block") {
    const fd = openSync(target, "r");
    const buf = Buffer.alloc(4096);
    readSync(fd, buf, 0, 4096, 1 * MiB);
    closeSync(fd);
    return buf.toString("utf8").replace(/\0+$/, "");
  }
  return readFileSync(path.join(target, "data.txt"), "utf8");
}

describe.skipIf(!haveTools)("node data path", () => {
  it.each(["ext4", "xfs", "block"] as const)("the whole story with %s", async (kind) => {
    const size = kind === "xfs" ? 320 * MiB : 64 * MiB;
    const volume = (
      await createVolume(local.clients.controller, {
        name: `pvc-story-${kind}`,
        volumeCapabilities: [capability(kind)],
        capacityRange: { requiredBytes: size },
      })
    ).volume;
    const first = await stageAndPublish(volume.volumeId, kind, `pod-${kind}-1`);
    writeData(kind, first.target, "as at snapshot time");
    const stats = await callCsi<{
      usage: Array<{ unit: string; total: number }>;
      volumeCondition: { abnormal: boolean };
    }>(local.clients.node, "NodeGetVolumeStats", { volumeId: volume.volumeId, volumePath: first.target });
    expect(stats.volumeCondition.abnormal).toBe(false);
    expect(stats.usage[0]!.total).toBeGreaterThan(0);
    if (kind !== "block") expect(stats.usage.map((u) => u.unit)).toEqual(["BYTES", "INODES"]);

    const snapshot = (await createSnapshot(local.clients.controller, `snap-story-${kind}`, volume.volumeId))
      .snapshot;
    writeData(kind, first.target, "written after the snapshot");

    const restored = (
      await createVolume(local.clients.controller, {
        name: `pvc-restored-${kind}`,
        volumeCapabilities: [capability(kind)],
        volumeContentSource: { snapshot: { snapshotId: snapshot.snapshotId } },
      })
    ).volume;
    const second = await stageAndPublish(restored.volumeId, kind, `pod-${kind}-2`);
    expect(readData(kind, second.target)).toBe("as at snapshot time");
    expect(readData(kind, first.target)).toBe("written after the snapshot");
    // Another volume's mount is not where this volume is (CSI spec, NodeGetVolumeStats: NOT_FOUND).
    await expect(
      callCsi(local.clients.node, "NodeGetVolumeStats", {
        volumeId: volume.volumeId,
        volumePath: second.target,
      }),
    ).rejects.toMatchObject({ code: 5, details: expect.stringContaining("not mounted there") as unknown });

    // A staged volume cannot be deleted (FAILED_PRECONDITION: in use).
    await expect(
      callCsi(local.clients.controller, "DeleteVolume", { volumeId: restored.volumeId }),
    ).rejects.toMatchObject({ code: 9 });

    const clone = (
      await createVolume(local.clients.controller, {
        name: `pvc-clone-${kind}`,
        volumeCapabilities: [capability(kind)],
        volumeContentSource: { volume: { volumeId: restored.volumeId } },
      })
    ).volume;
    await unpublishAndUnstage(volume.volumeId, first);
    await callCsi(local.clients.controller, "DeleteVolume", { volumeId: volume.volumeId });
    await callCsi(local.clients.controller, "DeleteSnapshot", { snapshotId: snapshot.snapshotId });
    await unpublishAndUnstage(restored.volumeId, second);
    const third = await stageAndPublish(clone.volumeId, kind, `pod-${kind}-3`);
    expect(readData(kind, third.target)).toBe("as at snapshot time");
    await callCsi(local.clients.controller, "DeleteVolume", { volumeId: restored.volumeId });
    await unpublishAndUnstage(clone.volumeId, third);
    await callCsi(local.clients.controller, "DeleteVolume", { volumeId: clone.volumeId });

    expect(mountsUnder(local.dataDir)).toEqual([]);
    expect(loopsOf(local.dataDir)).toEqual([]);
    const cap = await callCsi<{ availableCapacity: number }>(local.clients.controller, "GetCapacity", {});
    const volumes = await callCsi<{ entries: Array<{ volume: { volumeId: string } }> }>(
      local.clients.controller,
      "ListVolumes",
      {},
    );
    expect(volumes.entries.filter((e) => e.volume.volumeId.includes(kind))).toEqual([]);
    expect(cap.availableCapacity).toBeGreaterThan(0);
  });

  it("keeps a raw block volume's data raw: a restore inherits block mode, a mount restore is refused", async () => {
    const volume = (
      await createVolume(local.clients.controller, {
        name: "pvc-raw-source",
        volumeCapabilities: [capability("block")],
        capacityRange: { requiredBytes: 64 * MiB },
      })
    ).volume;
    expect(volume.volumeContext).toEqual({ "snapblock.dev/volumeMode": "block" });
    const first = await stageAndPublish(volume.volumeId, "block", "pod-raw-1");
    writeData("block", first.target, "raw bytes no blkid knows");
    const snapshot = (await createSnapshot(local.clients.controller, "snap-raw", volume.volumeId)).snapshot;
    await unpublishAndUnstage(volume.volumeId, first);

    // A mount volume from raw data would be formatted over it on its first stage: refused.
    const refused = await failureCode(
      createVolume(local.clients.controller, {
        name: "pvc-raw-as-fs",
        volumeCapabilities: [capability("ext4")],
        volumeContentSource: { snapshot: { snapshotId: snapshot.snapshotId } },
      }),
    );
    expect(refused).toMatchObject({
      code: 3,
      details: expect.stringMatching(/holds raw block data/) as unknown,
    });

    await callCsi(local.clients.controller, "DeleteVolume", { volumeId: volume.volumeId });
    const restored = (
      await createVolume(local.clients.controller, {
        name: "pvc-raw-restored",
        volumeCapabilities: [capability("block")],
        volumeContentSource: { snapshot: { snapshotId: snapshot.snapshotId } },
      })
    ).volume;
    const second = await stageAndPublish(restored.volumeId, "block", "pod-raw-2");
    expect(readData("block", second.target)).toBe("raw bytes no blkid knows");
    await unpublishAndUnstage(restored.volumeId, second);
    await callCsi(local.clients.controller, "DeleteVolume", { volumeId: restored.volumeId });
    await callCsi(local.clients.controller, "DeleteSnapshot", { snapshotId: snapshot.snapshotId });
  });

  it("never makes a filesystem over data it did not write: raw use, restores and clones", async () => {
    const both = [capability("block"), capability("ext4")];
    const volume = (
      await createVolume(local.clients.controller, {
        name: "pvc-both-modes",
        volumeCapabilities: both,
        capacityRange: { requiredBytes: 64 * MiB },
      })
    ).volume;
    const raw = await stageAndPublish(volume.volumeId, "block", "pod-both-1");
    writeData("block", raw.target, "written raw, blank to blkid");
    await unpublishAndUnstage(volume.volumeId, raw);
    const stageAsFs = (volumeId: string, name: string) => {
      const stagingTargetPath = path.join(kubelet, "staging", name);
      mkdirSync(stagingTargetPath, { recursive: true });
      return failureCode(
        callCsi(
          local.clients.node,
          "NodeStageVolume",
          { volumeId, stagingTargetPath, volumeCapability: capability("ext4") },
          120_000,
        ),
      );
    };
    const usedRaw = await stageAsFs(volume.volumeId, "both-as-fs");
    expect(usedRaw).toMatchObject({
      code: 9,
      details: expect.stringMatching(/used as a raw block device.*allowModeChange/) as unknown,
    });
    // The refused stage left nothing attached, and the raw data is as it was.
    expect(loopsOf(local.dataDir)).toEqual([]);
    const again = await stageAndPublish(volume.volumeId, "block", "pod-both-2");
    expect(readData("block", again.target)).toBe("written raw, blank to blkid");
    await unpublishAndUnstage(volume.volumeId, again);

    // A mount volume never staged (no filesystem yet), restored: not known to be new either.
    const fresh = (
      await createVolume(local.clients.controller, {
        name: "pvc-never-staged",
        volumeCapabilities: [capability("ext4")],
        capacityRange: { requiredBytes: 64 * MiB },
      })
    ).volume;
    const snapshot = (await createSnapshot(local.clients.controller, "snap-never-staged", fresh.volumeId))
      .snapshot;
    const restored = (
      await createVolume(local.clients.controller, {
        name: "pvc-restored-blank",
        volumeCapabilities: [capability("ext4")],
        volumeContentSource: { snapshot: { snapshotId: snapshot.snapshotId } },
      })
    ).volume;
    expect(await stageAsFs(restored.volumeId, "restored-blank")).toMatchObject({
      code: 9,
      details: expect.stringMatching(/restored from snapshot local\/snap-never-staged/) as unknown,
    });
    expect(loopsOf(local.dataDir)).toEqual([]);
    for (const id of [restored.volumeId, fresh.volumeId, volume.volumeId])
      await callCsi(local.clients.controller, "DeleteVolume", { volumeId: id });
    await callCsi(local.clients.controller, "DeleteSnapshot", { snapshotId: snapshot.snapshotId });
  });

  it("grows a staged filesystem: online where the block path can, otherwise at the next stage", async () => {
    const volume = (
      await createVolume(local.clients.controller, {
        name: "pvc-grow",
        volumeCapabilities: [capability("ext4")],
        capacityRange: { requiredBytes: 64 * MiB },
      })
    ).volume;
    let staged = await stageAndPublish(volume.volumeId, "ext4", "pod-grow");
    const sizeOf = async (target: string) =>
      (
        await callCsi<{ usage: Array<{ total: number }> }>(local.clients.node, "NodeGetVolumeStats", {
          volumeId: volume.volumeId,
          volumePath: target,
        })
      ).usage[0]!.total;
    const before = await sizeOf(staged.target);
    const expanded = await callCsi<{ capacityBytes: number; nodeExpansionRequired: boolean }>(
      local.clients.controller,
      "ControllerExpandVolume",
      {
        volumeId: volume.volumeId,
        capacityRange: { requiredBytes: 128 * MiB },
        volumeCapability: capability("ext4"),
      },
    );
    expect(expanded).toEqual({ capacityBytes: 128 * MiB, nodeExpansionRequired: true });
    const expandOnNode = () =>
      callCsi<{ capacityBytes: number }>(
        local.clients.node,
        "NodeExpandVolume",
        {
          volumeId: volume.volumeId,
          volumePath: staged.target,
          stagingTargetPath: staged.staging,
          capacityRange: { requiredBytes: 128 * MiB },
          volumeCapability: capability("ext4"),
        },
        60_000,
      ).then(
        (res) => ({ ok: true as const, res }),
        (err: { code: number; details: string }) => ({ ok: false as const, ...err }),
      );
    try {
      let outcome = await expandOnNode();
      if (!outcome.ok && outcome.code === 9) {
        // A block path that cannot resize a device in use: the answer says what to do, and after
        // a new stage the device has the new size.
        expect(outcome.details).toMatch(/unstage and stage/);
        await unpublishAndUnstage(volume.volumeId, staged);
        staged = await stageAndPublish(volume.volumeId, "ext4", "pod-grow-2");
        outcome = await expandOnNode();
      }
      if (outcome.ok) {
        expect(outcome.res.capacityBytes).toBe(128 * MiB);
        expect(await sizeOf(staged.target)).toBeGreaterThan(before + 32 * MiB);
      } else {
        // The kernel refuses online ext4 growth without CAP_SYS_RESOURCE (some sandboxes drop
        // it, this one among them): the answer must say so.
        expect({ code: outcome.code, details: outcome.details }).toMatchObject({
          code: 13,
          details: expect.stringMatching(/CAP_SYS_RESOURCE/) as unknown,
        });
      }
    } finally {
      await unpublishAndUnstage(volume.volumeId, staged);
    }
    await callCsi(local.clients.controller, "DeleteVolume", { volumeId: volume.volumeId });
  });

  it("after a restart while staged, says why I/O fails and keeps every acknowledged write", async () => {
    const volume = (
      await createVolume(local.clients.controller, {
        name: "pvc-restart",
        volumeCapabilities: [capability("ext4")],
        capacityRange: { requiredBytes: 64 * MiB },
      })
    ).volume;
    const staged = await stageAndPublish(volume.volumeId, "ext4", "pod-restart");
    writeData("ext4", staged.target, "acknowledged before the restart");
    const dataDir = local.dataDir;
    expect(await local.stop()).toBe(0);
    const port = await freePort();
    local = await startLocal({
      dataDir,
      args: ["--path-root", kubelet, "--pool-size", "2G", "--metrics-address", `127.0.0.1:${port}`],
    });

    const stats = await callCsi<{ volumeCondition: { abnormal: boolean; message: string } }>(
      local.clients.node,
      "NodeGetVolumeStats",
      { volumeId: volume.volumeId, volumePath: staged.target },
      60_000,
    );
    // What the operator service reports (the CLI's STATE column) agrees with the volume condition.
    const operator = new OperatorClient(local.socketPath);
    const state = (await operator.listVolumeStates()).states.find((v) => v.volumeId === volume.volumeId);
    operator.close();
    // The startup log and the metrics say the same as the condition.
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const startLog = local.log.join("\n");
    // Either the device still answers (I/O resumes) or the condition says what broke and what to do.
    if (stats.volumeCondition.abnormal) {
      expect(startLog).toContain("block device is broken after the restart");
      expect(metrics).toMatch(/^snapblock_node_attachments\{state="broken"\} 1$/m);
      expect(stats.volumeCondition.message).toMatch(/broken: .+; unstage and stage it again/);
      expect(state).toMatchObject({
        state: "broken",
        reason: expect.stringMatching(/; detach it and attach it again/) as unknown,
      });
    } else {
      expect(readData("ext4", staged.target)).toBe("acknowledged before the restart");
      expect(state).toMatchObject({ state: "published" });
      expect(startLog).toContain("its device answers I/O");
      expect(metrics).toMatch(/^snapblock_node_attachments\{state="ok"\} 1$/m);
    }
    // Unstage and stage again: the data path comes back, with the data.
    await unpublishAndUnstage(volume.volumeId, staged);
    const again = await stageAndPublish(volume.volumeId, "ext4", "pod-restart-2");
    expect(readData("ext4", again.target)).toBe("acknowledged before the restart");
    await unpublishAndUnstage(volume.volumeId, again);
    await callCsi(local.clients.controller, "DeleteVolume", { volumeId: volume.volumeId });
    expect(mountsUnder(dataDir)).toEqual([]);
    expect(loopsOf(dataDir)).toEqual([]);
  });
});
