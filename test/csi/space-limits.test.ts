import { closeSync, fsyncSync, mkdirSync, mkdtempSync, openSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callCsi } from "../../pkg/csi/index.js";
import { fetchSpace } from "../../pkg/engine-service/index.js";
import { BLOCK, MiB, createSnapshot, createVolume } from "./csi-fixtures.js";
import { failureCode, removeDataDir, startLocal, type LocalProcess } from "./local-process.js";
import { rootWithTools } from "../node-tools.js";

/**
 * Snapshot limits and a full pool, through the real binary (`snapblock local`): StorageClass
 * parameters validated at CreateVolume, CreateSnapshot refused with RESOURCE_EXHAUSTED naming the
 * limit, the Space service's figures, and a pool that fills up: logged, GetCapacity says so, a
 * full-copy restore is refused up front. Writing data needs the node data path (root and the node
 * tools, as test/csi/node-data-path.test.ts); without them only the control-plane part runs.
 */
const haveTools = rootWithTools(["nbdfuse", "losetup"]);

let local: LocalProcess;
let kubelet: string;
beforeAll(async () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), "sb-space-"));
  kubelet = path.join(dataDir, "kubelet");
  // A 64 MiB pool, overcommitted, so that writes can fill it.
  local = await startLocal({
    dataDir,
    args: ["--path-root", kubelet, "--pool-size", "64M", "--overcommit", "4"],
  });
});
afterAll(async () => {
  expect(await local.stop()).toBe(0);
  removeDataDir(local.dataDir);
});

const space = async () => {
  const [node] = await fetchSpace(`unix:${local.socketPath}`);
  return node!.space!;
};

describe("StorageClass snapshot limits", () => {
  it("are validated at CreateVolume, naming the parameter", async () => {
    for (const [parameters, pattern] of [
      [{ "snapblock.dev/maxSnapshots": "0" }, /maxSnapshots.*whole number from 1/],
      [{ "snapblock.dev/maxSnapshots": "ten" }, /maxSnapshots.*"ten"/],
      [{ "snapblock.dev/maxSnapshotSpace": "10 GB" }, /maxSnapshotSpace.*not a byte size/],
      [{ "snapblock.dev/maxSnapshotSpace": "-1Gi" }, /maxSnapshotSpace/],
    ] as const) {
      const err = await failureCode(
        createVolume(local.clients.controller, {
          name: "pvc-bad-limit",
          volumeCapabilities: [BLOCK],
          capacityRange: { requiredBytes: MiB },
          parameters,
        }),
      );
      expect(err.code).toBe(status.INVALID_ARGUMENT);
      expect(err.details).toMatch(pattern);
    }
  });

  it("refuses a snapshot past maxSnapshots with RESOURCE_EXHAUSTED naming the limit", async () => {
    const { volume } = await createVolume(local.clients.controller, {
      name: "pvc-count-limit",
      volumeCapabilities: [BLOCK],
      capacityRange: { requiredBytes: 4 * MiB },
      parameters: { "snapblock.dev/maxSnapshots": "2" },
    });
    const s1 = await createSnapshot(local.clients.controller, "snap-limit-1", volume.volumeId);
    await createSnapshot(local.clients.controller, "snap-limit-2", volume.volumeId);
    const err = await failureCode(createSnapshot(local.clients.controller, "snap-limit-3", volume.volumeId));
    expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(err.details).toMatch(
      /has 2 snapshot\(s\), its limit of 2 \(StorageClass parameter snapblock\.dev\/maxSnapshots\)/,
    );
    // Idempotency first: the same request for an existing snapshot still answers it.
    expect(
      (await createSnapshot(local.clients.controller, "snap-limit-2", volume.volumeId)).snapshot,
    ).toBeTruthy();
    await callCsi(local.clients.controller, "DeleteSnapshot", { snapshotId: s1.snapshot.snapshotId });
    await createSnapshot(local.clients.controller, "snap-limit-3", volume.volumeId);
    // A retried CreateVolume with other limits is another volume's request: ALREADY_EXISTS.
    const again = await failureCode(
      createVolume(local.clients.controller, {
        name: "pvc-count-limit",
        volumeCapabilities: [BLOCK],
        capacityRange: { requiredBytes: 4 * MiB },
        parameters: { "snapblock.dev/maxSnapshots": "3" },
      }),
    );
    expect(again.code).toBe(status.ALREADY_EXISTS);
    const figures = (await space()).volumes.find((v) => volume.volumeId.endsWith(`/${v.name}`))!;
    expect(figures).toMatchObject({ snapshotCount: 2, snapshotOnlyBytes: 0 });
  });
});

function capabilityBlock() {
  return { block: {}, accessMode: { mode: "SINGLE_NODE_WRITER" } };
}

async function stageBlock(volumeId: string, pod: string): Promise<{ staging: string; target: string }> {
  const staging = path.join(kubelet, "staging", volumeId.replace("/", "_"));
  const target = path.join(kubelet, "pods", pod, "volume");
  mkdirSync(staging, { recursive: true });
  mkdirSync(path.dirname(target), { recursive: true });
  await callCsi(
    local.clients.node,
    "NodeStageVolume",
    { volumeId, stagingTargetPath: staging, volumeCapability: capabilityBlock() },
    120_000,
  );
  await callCsi(local.clients.node, "NodePublishVolume", {
    volumeId,
    stagingTargetPath: staging,
    targetPath: target,
    volumeCapability: capabilityBlock(),
  });
  return { staging, target };
}

async function unstage(volumeId: string, p: { staging: string; target: string }): Promise<void> {
  await callCsi(local.clients.node, "NodeUnpublishVolume", { volumeId, targetPath: p.target });
  await callCsi(local.clients.node, "NodeUnstageVolume", { volumeId, stagingTargetPath: p.staging }, 60_000);
}

/** Writes MiB [from, from + mib) of the block device with distinct bytes; false when a write failed. */
function writeMiB(device: string, from: number, mib: number, fill: number): boolean {
  const fd = openSync(device, "r+");
  try {
    const buf = Buffer.alloc(MiB, fill);
    for (let i = 0; i < mib; i++) writeSync(fd, buf, 0, MiB, (from + i) * MiB);
    fsyncSync(fd);
    return true;
  } catch {
    return false;
  } finally {
    closeSync(fd);
  }
}

describe.skipIf(!haveTools)("space you can see, and a pool that fills", () => {
  it("limits snapshot space, then fills: logged, GetCapacity truthful, full copies refused", async () => {
    const { volume } = await createVolume(local.clients.controller, {
      name: "pvc-fill",
      volumeCapabilities: [BLOCK],
      capacityRange: { requiredBytes: 48 * MiB },
      parameters: { "snapblock.dev/maxSnapshotSpace": "16Mi" },
    });
    const engineName = volume.volumeId.split("/")[1]!;
    const p = await stageBlock(volume.volumeId, "pod-fill");
    try {
      expect(writeMiB(p.target, 0, 24, 1)).toBe(true);
      const snap = (await createSnapshot(local.clients.controller, "snap-fill-1", volume.volumeId)).snapshot;
      expect(writeMiB(p.target, 0, 20, 2)).toBe(true); // the snapshot alone now holds 20 MiB
      let figures = await space();
      const snapFigures = figures.snapshots.find((s) => snap.snapshotId.endsWith(`/${s.name}`))!;
      expect(snapFigures.exclusiveBytes).toBe(20 * MiB);
      expect(snapFigures.sharedBytes).toBe(4 * MiB);
      expect(figures.volumes.find((v) => v.name === engineName)).toMatchObject({
        snapshotOnlyBytes: 20 * MiB,
        exclusiveBytes: 20 * MiB,
        mappedBytes: 24 * MiB,
      });
      const err = await failureCode(createSnapshot(local.clients.controller, "snap-fill-2", volume.volumeId));
      expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
      expect(err.details).toMatch(
        /at or over its limit of 16777216 bytes \(StorageClass parameter snapblock\.dev\/maxSnapshotSpace\)/,
      );

      // The pool (64 MiB) holds 44 MiB. A full copy of the snapshot needs 24 MiB: refused.
      const copy = await failureCode(
        createVolume(local.clients.controller, {
          name: "pvc-fill-copy",
          volumeCapabilities: [BLOCK],
          volumeContentSource: { snapshot: { snapshotId: snap.snapshotId } },
          parameters: { "snapblock.dev/fullCopy": "true" },
        }),
      );
      expect(copy.code).toBe(status.RESOURCE_EXHAUSTED);
      expect(copy.details).toMatch(/full copy of snapshot .* needs 25165824 bytes but the pool has \d+ free/);

      // Fill it: writes past the pool's end fail; the process says so; capacity says none is left.
      expect(writeMiB(p.target, 24, 24, 3)).toBe(false);
      await new Promise((r) => setTimeout(r, 1500)); // a background commit reports the level
      // Logged as a warning once per level reached (a fast writer may pass 80 and 90 between two
      // looks and land on full at once).
      const levels = local.log
        .filter((l) => /the pool is (full|over \d+% full)/.test(l))
        .map((l) => JSON.parse(l) as { level: string; msg: string });
      expect(levels.length).toBeGreaterThan(0);
      expect(levels.every((l) => l.level === "warn")).toBe(true);
      expect(levels.at(-1)!.msg).toMatch(/^the pool is full/);
      const capacity = await callCsi<{ availableCapacity: number }>(local.clients.controller, "GetCapacity", {
        volumeCapabilities: [BLOCK],
      });
      figures = await space();
      expect(capacity.availableCapacity).toBe(figures.pool.freeBytes * 4);
      expect(capacity.availableCapacity).toBeLessThan(4 * MiB * 4);
      // Deleting the snapshot gives back what it held alone.
      const before = figures.pool.allocatedBytes;
      await callCsi(local.clients.controller, "DeleteSnapshot", { snapshotId: snap.snapshotId });
      figures = await space();
      expect(before - figures.pool.allocatedBytes).toBe(snapFigures.exclusiveBytes);
    } finally {
      await unstage(volume.volumeId, p);
      await callCsi(local.clients.controller, "DeleteVolume", { volumeId: volume.volumeId });
    }
  }, 180_000);
});
