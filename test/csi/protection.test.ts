import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callCsi } from "../../pkg/csi/index.js";
import { OperatorClient } from "../../pkg/operator/index.js";
import { BLOCK, MiB, createVolume, type SnapshotOut } from "./csi-fixtures.js";
import { failureCode, removeDataDir, startLocal, type LocalProcess } from "./local-process.js";

/**
 * Recovery points through the real binary's CSI Controller (`snapblock local`): the StorageClass
 * parameter, ControllerModifyVolume with mutable_parameters, ValidateVolumeCapabilities, and
 * points answering ListSnapshots/GetSnapshot by id and restoring through CreateVolume.
 */
const KEY = "snapblock.dev/protection";
let local: LocalProcess;
beforeAll(async () => {
  local = await startLocal();
});
afterAll(async () => {
  expect(await local.stop()).toBe(0);
  removeDataDir(local.dataDir);
});

const controller = () => local.clients.controller;

async function listSnapshots(sourceVolumeId: string): Promise<SnapshotOut[]> {
  const res = await callCsi<{ entries: Array<{ snapshot: SnapshotOut }> }>(controller(), "ListSnapshots", {
    sourceVolumeId,
  });
  return res.entries.map((e) => e.snapshot);
}

/** Polls (the scheduler runs once a second) until the volume has a point, for at most 20 s. */
async function firstPoint(volumeId: string): Promise<SnapshotOut> {
  return pointWhere(volumeId, () => true);
}

async function pointIds(volumeId: string): Promise<string[]> {
  return (await listSnapshots(volumeId)).map((s) => s.snapshotId).filter((id) => id.includes("/rp--"));
}

/** Polls until the volume has a point that `test` accepts, for at most 20 s. */
async function pointWhere(volumeId: string, test: (id: string) => boolean): Promise<SnapshotOut> {
  const until = Date.now() + 20_000;
  for (;;) {
    const point = (await listSnapshots(volumeId)).find(
      (s) => s.snapshotId.includes("/rp--") && test(s.snapshotId),
    );
    if (point) return point;
    if (Date.now() > until) throw new Error(`no such recovery point of ${volumeId} within 20 s`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

describe("protection through CSI", () => {
  it("advertises MODIFY_VOLUME", async () => {
    const c = await callCsi<{ capabilities: Array<{ rpc: { type: string } }> }>(
      controller(),
      "ControllerGetCapabilities",
      {},
    );
    expect(c.capabilities.map((x) => x.rpc.type)).toContain("MODIFY_VOLUME");
  });

  it("refuses a bad policy and unknown mutable parameters with INVALID_ARGUMENT", async () => {
    const bad = await failureCode(
      createVolume(controller(), {
        name: "pvc-bad-policy",
        volumeCapabilities: [BLOCK],
        capacityRange: { requiredBytes: MiB },
        parameters: { [KEY]: "1m for 10s" },
      }),
    );
    expect(bad.code).toBe(status.INVALID_ARGUMENT);
    expect(bad.details).toMatch(/snapblock.dev\/protection.*at least the interval/);
    const unknown = await failureCode(
      createVolume(controller(), {
        name: "pvc-bad-mutable",
        volumeCapabilities: [BLOCK],
        capacityRange: { requiredBytes: MiB },
        mutableParameters: { "snapblock.dev/fullCopy": "true" },
      }),
    );
    expect(unknown.code).toBe(status.INVALID_ARGUMENT);
    expect(unknown.details).toMatch(/unknown mutable_parameters "snapblock.dev\/fullCopy"/);
    // Nothing was made by either.
    const vols = await callCsi<{ entries: Array<{ volume: { volumeId: string } }> }>(
      controller(),
      "ListVolumes",
      {},
    );
    expect(vols.entries.map((e) => e.volume.volumeId).filter((id) => id.includes("pvc-bad-"))).toEqual([]);
  });

  it("takes points of a protected volume, which restore through CreateVolume by id", async () => {
    const { volume } = await createVolume(controller(), {
      name: "pvc-protected",
      volumeCapabilities: [BLOCK],
      capacityRange: { requiredBytes: MiB },
      parameters: { [KEY]: "1s for 10m, 1m for 1h" },
    });
    const point = await firstPoint(volume.volumeId);
    expect(point.sourceVolumeId).toBe(volume.volumeId);
    expect(point.readyToUse).toBe(true);
    const got = await callCsi<{ snapshot: SnapshotOut }>(controller(), "GetSnapshot", {
      snapshotId: point.snapshotId,
    });
    expect(got.snapshot.snapshotId).toBe(point.snapshotId);
    const restored = await createVolume(controller(), {
      name: "pvc-from-point",
      volumeCapabilities: [BLOCK],
      volumeContentSource: { snapshot: { snapshotId: point.snapshotId } },
    });
    expect(restored.volume.contentSource?.snapshot?.snapshotId).toBe(point.snapshotId);
    expect(restored.volume.capacityBytes).toBe(MiB);
    // An idle volume gets no more points: its first one stays the only one.
    await new Promise((resolve) => setTimeout(resolve, 2500));
    expect((await listSnapshots(volume.volumeId)).filter((s) => s.snapshotId.includes("/rp--"))).toHaveLength(
      1,
    );
  });

  it("modifies the policy with ControllerModifyVolume, idempotently, and validates it", async () => {
    const { volume } = await createVolume(controller(), {
      name: "pvc-modify",
      volumeCapabilities: [BLOCK],
      capacityRange: { requiredBytes: MiB },
    });
    const validate = (mutableParameters: Record<string, string>) =>
      callCsi<{ confirmed: unknown; message: string }>(controller(), "ValidateVolumeCapabilities", {
        volumeId: volume.volumeId,
        volumeCapabilities: [BLOCK],
        mutableParameters,
      });
    expect((await validate({ [KEY]: "off" })).confirmed).not.toBeNull();
    for (let i = 0; i < 2; i++) {
      expect(
        await callCsi(controller(), "ControllerModifyVolume", {
          volumeId: volume.volumeId,
          mutableParameters: { [KEY]: "1s for 5m" },
        }),
      ).toEqual({});
    }
    const confirmed = await validate({ [KEY]: "1s  for 300s" });
    expect(confirmed.confirmed).not.toBeNull();
    const mismatch = await validate({ [KEY]: "off" });
    expect(mismatch.confirmed).toBeNull();
    expect(mismatch.message).toMatch(/the volume's policy is "1s for 5m"/);
    // The policy took effect: the scheduler takes the volume's first point.
    await firstPoint(volume.volumeId);

    const notFound = await failureCode(
      callCsi(controller(), "ControllerModifyVolume", {
        volumeId: `${volume.volumeId.split("/")[0]}/pvc-nonexistent`,
        mutableParameters: { [KEY]: "off" },
      }),
    );
    expect(notFound.code).toBe(status.NOT_FOUND);
    for (const [mutableParameters, pattern] of [
      [{}, /mutable_parameters is required/],
      [{ "snapblock.dev/replicas": "2" }, /unknown mutable_parameters "snapblock.dev\/replicas"/],
      [{ [KEY]: "every second" }, /not "<interval> for <window>"/],
    ] as const) {
      const err = await failureCode(
        callCsi(controller(), "ControllerModifyVolume", { volumeId: volume.volumeId, mutableParameters }),
      );
      expect(err.code).toBe(status.INVALID_ARGUMENT);
      expect(err.details).toMatch(pattern);
    }
    const noId = await failureCode(
      callCsi(controller(), "ControllerModifyVolume", { mutableParameters: { [KEY]: "off" } }),
    );
    expect(noId.code).toBe(status.INVALID_ARGUMENT);
    // Turned off: the policy is gone (the points it took stay).
    await callCsi(controller(), "ControllerModifyVolume", {
      volumeId: volume.volumeId,
      mutableParameters: { [KEY]: "off" },
    });
    expect((await validate({ [KEY]: "off" })).confirmed).not.toBeNull();
  });

  it(
    "keeps a pinned point from thinning until DeleteSnapshot deletes it, idempotently",
    { timeout: 90_000 },
    async () => {
      const operator = new OperatorClient(local.socketPath);
      try {
        const { volume } = await createVolume(controller(), {
          name: "pvc-pinned",
          volumeCapabilities: [BLOCK],
          capacityRange: { requiredBytes: MiB },
          parameters: { [KEY]: "1s for 2s" },
        });
        const pinned = await firstPoint(volume.volumeId);
        expect(await operator.setPointPinned(pinned.snapshotId, true)).toEqual({ pinned: true });
        expect(await operator.setPointPinned(pinned.snapshotId, true)).toEqual({ pinned: true });
        expect(await operator.listPinnedPoints(volume.volumeId)).toEqual({
          snapshotIds: [pinned.snapshotId],
        });
        // A volume that grows differs from its points: each expand brings a new one. The policy
        // keeps only points younger than 2 s besides the newest: the unpinned second point goes,
        // the pinned first one stays.
        const grow = (bytes: number) =>
          callCsi(controller(), "ControllerExpandVolume", {
            volumeId: volume.volumeId,
            capacityRange: { requiredBytes: bytes },
            volumeCapability: BLOCK,
          });
        await grow(2 * MiB);
        const second = await pointWhere(volume.volumeId, (id) => id !== pinned.snapshotId);
        await grow(3 * MiB);
        const third = await pointWhere(
          volume.volumeId,
          (id) => id !== pinned.snapshotId && id !== second.snapshotId,
        );
        const until = Date.now() + 20_000;
        while ((await pointIds(volume.volumeId)).includes(second.snapshotId)) {
          if (Date.now() > until) throw new Error(`point ${second.snapshotId} was not thinned within 20 s`);
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
        expect(await pointIds(volume.volumeId)).toEqual([pinned.snapshotId, third.snapshotId]);

        // A volume restored from it is independent of it (it shares chunks, counted).
        const restored = await createVolume(controller(), {
          name: "pvc-from-pinned",
          volumeCapabilities: [BLOCK],
          volumeContentSource: { snapshot: { snapshotId: pinned.snapshotId } },
        });
        // Deleting the volume deletes its points but not the pinned one: a volume's snapshots outlive it.
        await callCsi(controller(), "DeleteVolume", { volumeId: volume.volumeId });
        const all = async () =>
          (
            await callCsi<{ entries: Array<{ snapshot: SnapshotOut }> }>(controller(), "ListSnapshots", {})
          ).entries.map((e) => e.snapshot.snapshotId);
        expect(await all()).toContain(pinned.snapshotId);
        expect(await all()).not.toContain(third.snapshotId);

        // What csi-snapshotter sends when the VolumeSnapshotContent (deletionPolicy Delete) goes:
        // the point is deleted with its pin; a second call is OK (CSI spec).
        for (let i = 0; i < 2; i++)
          expect(await callCsi(controller(), "DeleteSnapshot", { snapshotId: pinned.snapshotId })).toEqual(
            {},
          );
        expect(await all()).not.toContain(pinned.snapshotId);
        const gone = await failureCode(operator.setPointPinned(pinned.snapshotId, false));
        expect(gone.code).toBe(status.NOT_FOUND);
        expect(gone.details).toMatch(/thinned by its policy, or deleted/);
        const got = await callCsi<{ volume: { volumeId: string } }>(controller(), "ControllerGetVolume", {
          volumeId: restored.volume.volumeId,
        });
        expect(got.volume.volumeId).toBe(restored.volume.volumeId);
      } finally {
        operator.close();
      }
    },
  );
});
