import { afterAll, describe, expect, it } from "vitest";
import { callCsi } from "../../pkg/csi/index.js";
import {
  BLOCK,
  MOUNT_EXT4,
  MiB,
  createSnapshot,
  createVolume,
  type SnapshotOut,
  type VolumeOut,
} from "./csi-fixtures.js";
import { removeDataDir, startLocal, type LocalProcess } from "./local-process.js";

// Volumes, snapshots and their CSI metadata survive a clean restart and a crash (SIGKILL).
let local: LocalProcess | undefined;
let dataDir = "";
afterAll(async () => {
  if (local) await local.kill();
  if (dataDir) removeDataDir(dataDir);
});

async function listAll(l: LocalProcess): Promise<{ volumes: VolumeOut[]; snapshots: SnapshotOut[] }> {
  const v = await callCsi<{ entries: Array<{ volume: VolumeOut }> }>(l.clients.controller, "ListVolumes", {});
  const s = await callCsi<{ entries: Array<{ snapshot: SnapshotOut }> }>(
    l.clients.controller,
    "ListSnapshots",
    {},
  );
  return { volumes: v.entries.map((e) => e.volume), snapshots: s.entries.map((e) => e.snapshot) };
}

describe("restart", () => {
  it("keeps volumes and snapshots across SIGTERM and SIGKILL", async () => {
    local = await startLocal();
    dataDir = local.dataDir;
    const a = (
      await createVolume(local.clients.controller, {
        name: "pvc-keep",
        volumeCapabilities: [MOUNT_EXT4],
        parameters: { fsType: "ext4" },
        capacityRange: { requiredBytes: 32 * MiB },
      })
    ).volume;
    const b = (
      await createVolume(local.clients.controller, {
        name: "a name the engine cannot use as is",
        volumeCapabilities: [BLOCK],
        capacityRange: { requiredBytes: 4 * MiB },
      })
    ).volume;
    await createSnapshot(local.clients.controller, "snap-keep", a.volumeId);
    const before = await listAll(local);
    expect(await local.stop()).toBe(0);

    local = await startLocal({ dataDir });
    const afterStop = await listAll(local);
    expect(afterStop).toEqual(before);
    // Idempotency still holds after the restart: same name, same request, same volume.
    const again = await createVolume(local.clients.controller, {
      name: "a name the engine cannot use as is",
      volumeCapabilities: [BLOCK],
      capacityRange: { requiredBytes: 4 * MiB },
    });
    expect(again.volume).toEqual(b);
    // Work right before a crash is durable once the call has answered.
    const c = (
      await createVolume(local.clients.controller, {
        name: "pvc-before-crash",
        volumeCapabilities: [MOUNT_EXT4],
        volumeContentSource: { snapshot: { snapshotId: "local/snap-keep" } },
      })
    ).volume;
    const s2 = (await createSnapshot(local.clients.controller, "snap-before-crash", c.volumeId)).snapshot;
    await callCsi(local.clients.controller, "DeleteSnapshot", { snapshotId: "local/snap-keep" });
    const beforeCrash = await listAll(local);
    await local.kill();

    local = await startLocal({ dataDir });
    const afterCrash = await listAll(local);
    expect(afterCrash).toEqual(beforeCrash);
    expect(afterCrash.snapshots.map((s) => s.snapshotId)).toEqual([s2.snapshotId]);
    expect(
      afterCrash.volumes.find((v) => v.volumeId === c.volumeId)?.contentSource?.snapshot?.snapshotId,
    ).toBe("local/snap-keep");
    expect(await local.stop()).toBe(0);
    local = undefined;
  });
});
