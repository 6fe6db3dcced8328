import { status } from "@grpc/grpc-js";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callCsi } from "../../pkg/csi/index.js";
import {
  BLOCK,
  MOUNT_ANY,
  MOUNT_EXT4,
  MiB,
  createSnapshot,
  createVolume,
  type SnapshotOut,
  type VolumeOut,
} from "./csi-fixtures.js";
import { failureCode, removeDataDir, startLocal, type LocalProcess } from "./local-process.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** The operator CLI of the real binary, against this test's socket. */
function runCli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const res = spawnSync(
    process.execPath,
    ["--import", "tsx", "cmd/snapblock.ts", ...args, "--endpoint", `unix://${local.socketPath}`],
    { cwd: ROOT, encoding: "utf8", timeout: 60_000 },
  );
  return { status: res.status, stdout: res.stdout, stderr: res.stderr };
}

// The Identity and Controller services of the real binary, driven as the sidecars drive them.
let local: LocalProcess;
beforeAll(async () => {
  local = await startLocal();
});
afterAll(async () => {
  expect(await local.stop()).toBe(0);
  removeDataDir(local.dataDir);
});

describe("Identity", () => {
  it("reports name, version, capabilities and readiness", async () => {
    const info = await callCsi<{ name: string; vendorVersion: string }>(
      local.clients.identity,
      "GetPluginInfo",
      {},
    );
    expect(info.name).toBe("csi.snapblock.dev");
    expect(info.vendorVersion).toMatch(/^\d+\.\d+\.\d+/);
    const caps = await callCsi<{ capabilities: unknown[] }>(
      local.clients.identity,
      "GetPluginCapabilities",
      {},
    );
    expect(caps.capabilities).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ service: { type: "CONTROLLER_SERVICE" } }),
        expect.objectContaining({ service: { type: "VOLUME_ACCESSIBILITY_CONSTRAINTS" } }),
        expect.objectContaining({ service: { type: "SNAPSHOT_METADATA_SERVICE" } }),
        expect.objectContaining({ volumeExpansion: { type: "ONLINE" } }),
      ]),
    );
    expect(await callCsi(local.clients.identity, "Probe", {})).toEqual({ ready: { value: true } });
  });

  it("advertises the controller and node capabilities of the design", async () => {
    const c = await callCsi<{ capabilities: Array<{ rpc: { type: string } }> }>(
      local.clients.controller,
      "ControllerGetCapabilities",
      {},
    );
    expect(c.capabilities.map((x) => x.rpc.type)).toEqual(
      expect.arrayContaining([
        "CREATE_DELETE_VOLUME",
        "CREATE_DELETE_SNAPSHOT",
        "LIST_SNAPSHOTS",
        "GET_SNAPSHOT",
        "LIST_VOLUMES",
        "CLONE_VOLUME",
        "EXPAND_VOLUME",
        "GET_CAPACITY",
        "GET_VOLUME",
      ]),
    );
    const n = await callCsi<{ capabilities: Array<{ rpc: { type: string } }> }>(
      local.clients.node,
      "NodeGetCapabilities",
      {},
    );
    expect(n.capabilities.map((x) => x.rpc.type)).toEqual(
      expect.arrayContaining([
        "STAGE_UNSTAGE_VOLUME",
        "GET_VOLUME_STATS",
        "EXPAND_VOLUME",
        "VOLUME_CONDITION",
      ]),
    );
    const info = await callCsi<{ nodeId: string; accessibleTopology: { segments: Record<string, string> } }>(
      local.clients.node,
      "NodeGetInfo",
      {},
    );
    expect(info.nodeId).toBe("local");
    expect(info.accessibleTopology.segments).toEqual({ "topology.snapblock.dev/node": "local" });
  });
});

describe("CreateVolume", () => {
  it("honours the capacity range and is idempotent by name", async () => {
    const req = {
      name: "pvc-idem",
      volumeCapabilities: [MOUNT_EXT4],
      capacityRange: { requiredBytes: 10 * MiB + 1, limitBytes: 20 * MiB },
    };
    const first = await createVolume(local.clients.controller, req);
    expect(first.volume.capacityBytes).toBeGreaterThanOrEqual(10 * MiB + 1);
    expect(first.volume.capacityBytes).toBeLessThanOrEqual(20 * MiB);
    expect(first.volume.accessibleTopology).toEqual([
      { segments: { "topology.snapblock.dev/node": "local" } },
    ]);
    const again = await createVolume(local.clients.controller, req);
    expect(again.volume).toEqual(first.volume);
    // Same name, conflicting request: ALREADY_EXISTS (CSI spec, CreateVolume errors).
    const conflict = await failureCode(
      createVolume(local.clients.controller, { ...req, capacityRange: { requiredBytes: 30 * MiB } }),
    );
    expect(conflict.code).toBe(status.ALREADY_EXISTS);
    expect(conflict.details).toContain("capacity_range");
  });

  it("maps any CSI name to a stable id and finds it again", async () => {
    const name = "Ünïcode name with spaces and / slashes and a long tail ".repeat(3);
    const a = await createVolume(local.clients.controller, { name, volumeCapabilities: [BLOCK] });
    const b = await createVolume(local.clients.controller, { name, volumeCapabilities: [BLOCK] });
    expect(a.volume.volumeId).toBe(b.volume.volumeId);
    expect(a.volume.volumeId).toMatch(/^local\/h--[0-9a-f]{40}$/);
    expect(Buffer.byteLength(a.volume.volumeId)).toBeLessThanOrEqual(128);
    const got = await callCsi<{ volume: VolumeOut }>(local.clients.controller, "ControllerGetVolume", {
      volumeId: a.volume.volumeId,
    });
    expect(got.volume.volumeId).toBe(a.volume.volumeId);
  });

  it("uses fsType from the StorageClass or the capability, ext4 by default", async () => {
    const xfs = await createVolume(local.clients.controller, {
      name: "pvc-xfs",
      volumeCapabilities: [MOUNT_ANY],
      parameters: { fsType: "xfs", "csi.storage.k8s.io/pvc/name": "data" },
    });
    expect(xfs.volume.volumeContext["snapblock.dev/fsType"]).toBe("xfs");
    const dflt = await createVolume(local.clients.controller, {
      name: "pvc-default",
      volumeCapabilities: [MOUNT_ANY],
    });
    expect(dflt.volume.volumeContext["snapblock.dev/fsType"]).toBe("ext4");
    expect(dflt.volume.capacityBytes).toBe(1024 * MiB);
  });
});

describe("snapshots, restores and clones", () => {
  it("creates snapshots idempotently, restores and clones them, and deletes in any order", async () => {
    const vol = (
      await createVolume(local.clients.controller, {
        name: "pvc-src",
        volumeCapabilities: [MOUNT_EXT4],
        capacityRange: { requiredBytes: 16 * MiB },
      })
    ).volume;
    const snap = (await createSnapshot(local.clients.controller, "snap-src", vol.volumeId)).snapshot;
    expect(snap).toMatchObject({
      sourceVolumeId: vol.volumeId,
      sizeBytes: vol.capacityBytes,
      readyToUse: true,
    });
    expect(snap.creationTime!.seconds).toBeGreaterThan(1_600_000_000);
    expect((await createSnapshot(local.clients.controller, "snap-src", vol.volumeId)).snapshot).toEqual(snap);

    const restored = (
      await createVolume(local.clients.controller, {
        name: "pvc-restored",
        volumeCapabilities: [MOUNT_EXT4],
        volumeContentSource: { snapshot: { snapshotId: snap.snapshotId } },
      })
    ).volume;
    expect(restored.contentSource?.snapshot?.snapshotId).toBe(snap.snapshotId);
    expect(restored.capacityBytes).toBe(snap.sizeBytes);
    const bigger = (
      await createVolume(local.clients.controller, {
        name: "pvc-restored-bigger",
        volumeCapabilities: [MOUNT_EXT4],
        capacityRange: { requiredBytes: 32 * MiB },
        volumeContentSource: { snapshot: { snapshotId: snap.snapshotId } },
      })
    ).volume;
    expect(bigger.capacityBytes).toBe(32 * MiB);
    const clone = (
      await createVolume(local.clients.controller, {
        name: "pvc-clone",
        volumeCapabilities: [MOUNT_EXT4],
        parameters: { "snapblock.dev/fullCopy": "true" },
        volumeContentSource: { volume: { volumeId: vol.volumeId } },
      })
    ).volume;
    expect(clone.contentSource?.volume?.volumeId).toBe(vol.volumeId);
    const got = await callCsi<{ status: { volumeCondition: { abnormal: boolean; message: string } } }>(
      local.clients.controller,
      "ControllerGetVolume",
      { volumeId: clone.volumeId },
    );
    expect(got.status.volumeCondition.abnormal).toBe(false);
    expect(got.status.volumeCondition.message).toMatch(/^full copy (running|done)/);

    // Delete the source first: snapshot, restore and clone stay usable.
    await callCsi(local.clients.controller, "DeleteVolume", { volumeId: vol.volumeId });
    await callCsi(local.clients.controller, "DeleteVolume", { volumeId: vol.volumeId });
    const listed = await callCsi<{ entries: Array<{ snapshot: SnapshotOut }> }>(
      local.clients.controller,
      "ListSnapshots",
      { snapshotId: snap.snapshotId },
    );
    expect(listed.entries.map((e) => e.snapshot.sourceVolumeId)).toEqual([vol.volumeId]);
    await callCsi(local.clients.controller, "DeleteSnapshot", { snapshotId: snap.snapshotId });
    await callCsi(local.clients.controller, "DeleteSnapshot", { snapshotId: snap.snapshotId });
    for (const v of [restored, bigger, clone])
      await callCsi(local.clients.controller, "DeleteVolume", { volumeId: v.volumeId });
    expect(
      (
        await failureCode(
          callCsi(local.clients.controller, "ControllerGetVolume", { volumeId: clone.volumeId }),
        )
      ).code,
    ).toBe(status.NOT_FOUND);
  });

  it("GetSnapshot answers what CreateSnapshot made, and NOT_FOUND once it is deleted", async () => {
    const vol = (
      await createVolume(local.clients.controller, {
        name: "pvc-get-snap",
        volumeCapabilities: [BLOCK],
        capacityRange: { requiredBytes: 4 * MiB },
      })
    ).volume;
    const made = (await createSnapshot(local.clients.controller, "snap-get", vol.volumeId)).snapshot;
    const got = await callCsi<{ snapshot: SnapshotOut }>(local.clients.controller, "GetSnapshot", {
      snapshotId: made.snapshotId,
    });
    expect(got.snapshot).toEqual(made);
    // The operator CLI's `snapshot get` asks GetSnapshot too.
    const cli = runCli(["snapshot", "get", made.snapshotId, "--json"]);
    expect(cli.status).toBe(0);
    expect(JSON.parse(cli.stdout)).toMatchObject({ snapshotId: made.snapshotId, readyToUse: true });
    await callCsi(local.clients.controller, "DeleteSnapshot", { snapshotId: made.snapshotId });
    const gone = await failureCode(
      callCsi(local.clients.controller, "GetSnapshot", { snapshotId: made.snapshotId }),
    );
    expect(gone.code).toBe(status.NOT_FOUND);
    expect(gone.details).toContain(made.snapshotId);
    const cliGone = runCli(["snapshot", "get", made.snapshotId]);
    expect(cliGone.status).toBe(1);
    expect(cliGone.stderr).toContain(`snapshot ${made.snapshotId} does not exist`);
    await callCsi(local.clients.controller, "DeleteVolume", { volumeId: vol.volumeId });
  });

  it("expands volumes and reports whether the node must grow a filesystem", async () => {
    const vol = (
      await createVolume(local.clients.controller, {
        name: "pvc-grow",
        volumeCapabilities: [MOUNT_EXT4],
        capacityRange: { requiredBytes: 8 * MiB },
      })
    ).volume;
    const res = await callCsi<{ capacityBytes: number; nodeExpansionRequired: boolean }>(
      local.clients.controller,
      "ControllerExpandVolume",
      {
        volumeId: vol.volumeId,
        capacityRange: { requiredBytes: 24 * MiB },
        volumeCapability: MOUNT_EXT4,
      },
    );
    expect(res).toEqual({ capacityBytes: 24 * MiB, nodeExpansionRequired: true });
    const block = await callCsi<{ capacityBytes: number; nodeExpansionRequired: boolean }>(
      local.clients.controller,
      "ControllerExpandVolume",
      {
        volumeId: vol.volumeId,
        capacityRange: { requiredBytes: 16 * MiB },
        volumeCapability: BLOCK,
      },
    );
    expect(block).toEqual({ capacityBytes: 24 * MiB, nodeExpansionRequired: false });
  });
});

describe("listing", () => {
  it("pages ListVolumes and ListSnapshots without gaps or repeats, and filters snapshots", async () => {
    const base = (
      await createVolume(local.clients.controller, {
        name: "pvc-list",
        volumeCapabilities: [BLOCK],
        capacityRange: { requiredBytes: MiB },
      })
    ).volume;
    for (let i = 0; i < 7; i++)
      await createSnapshot(local.clients.controller, `snap-list-${i}`, base.volumeId);
    const all = await callCsi<{ entries: Array<{ volume: VolumeOut }> }>(
      local.clients.controller,
      "ListVolumes",
      {},
    );
    const seen: string[] = [];
    let token = "";
    let pages = 0;
    do {
      const page = await callCsi<{ entries: Array<{ volume: VolumeOut }>; nextToken: string }>(
        local.clients.controller,
        "ListVolumes",
        { maxEntries: 2, startingToken: token },
      );
      expect(page.entries.length).toBeLessThanOrEqual(2);
      seen.push(...page.entries.map((e) => e.volume.volumeId));
      token = page.nextToken;
      pages++;
    } while (token !== "");
    expect(seen).toEqual(all.entries.map((e) => e.volume.volumeId));
    expect(pages).toBeGreaterThan(1);

    const snaps: string[] = [];
    token = "";
    do {
      const page = await callCsi<{ entries: Array<{ snapshot: SnapshotOut }>; nextToken: string }>(
        local.clients.controller,
        "ListSnapshots",
        {
          maxEntries: 3,
          startingToken: token,
          sourceVolumeId: base.volumeId,
        },
      );
      snaps.push(...page.entries.map((e) => e.snapshot.snapshotId));
      token = page.nextToken;
    } while (token !== "");
    expect(snaps).toEqual([...Array(7).keys()].map((i) => `local/snap-list-${i}`));
    const none = await callCsi<{ entries: unknown[] }>(local.clients.controller, "ListSnapshots", {
      snapshotId: "local/no-such-snapshot",
    });
    expect(none.entries).toEqual([]);
    const other = await callCsi<{ entries: unknown[] }>(local.clients.controller, "ListSnapshots", {
      sourceVolumeId: "local/no-such-volume",
    });
    expect(other.entries).toEqual([]);
  });

  it("reports capacity, and none for what it cannot provision", async () => {
    const cap = await callCsi<{ availableCapacity: number; maximumVolumeSize: { value: number } }>(
      local.clients.controller,
      "GetCapacity",
      { volumeCapabilities: [MOUNT_EXT4] },
    );
    expect(cap.availableCapacity).toBeGreaterThan(0);
    expect(cap.availableCapacity).toBeLessThanOrEqual(8 * 512 * MiB);
    const multi = await callCsi<{ availableCapacity: number }>(local.clients.controller, "GetCapacity", {
      volumeCapabilities: [{ mount: {}, accessMode: { mode: "MULTI_NODE_MULTI_WRITER" } }],
    });
    expect(multi.availableCapacity).toBe(0);
    const elsewhere = await callCsi<{ availableCapacity: number }>(local.clients.controller, "GetCapacity", {
      accessibleTopology: { segments: { "topology.snapblock.dev/node": "other-node" } },
    });
    expect(elsewhere.availableCapacity).toBe(0);
  });
});

describe("logs", () => {
  it("writes one JSON line per call with method, ids, duration and code, and never a secret", async () => {
    await createVolume(local.clients.controller, {
      name: "pvc-secret",
      volumeCapabilities: [BLOCK],
      capacityRange: { requiredBytes: MiB },
      secrets: { password: "hunter2-very-secret" },
    });
    await failureCode(
      callCsi(local.clients.controller, "DeleteSnapshot", {
        snapshotId: "",
        secrets: { token: "hunter2-very-secret" },
      }),
    );
    // The process logs a call before it answers; its stderr reaches us a little later.
    const parsed = () =>
      local.log.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Record<string, unknown>);
    const deadline = Date.now() + 30_000;
    while (
      !parsed().some((l) => l.method === "DeleteSnapshot" && l.code === "INVALID_ARGUMENT") &&
      Date.now() < deadline
    ) {
      await new Promise((r) => setTimeout(r, 10));
    }
    const lines = parsed();
    const create = lines.find((l) => l.method === "CreateVolume" && l.name === "pvc-secret");
    expect(create).toMatchObject({ code: "OK", volumeId: "local/pvc-secret" });
    expect(typeof create?.durationMs).toBe("number");
    expect(lines.find((l) => l.method === "DeleteSnapshot" && l.code === "INVALID_ARGUMENT")).toBeTruthy();
    expect(local.log.join("\n")).not.toContain("hunter2-very-secret");
  });
});
