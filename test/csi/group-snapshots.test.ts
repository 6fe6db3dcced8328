import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callCsi, type CsiSnapshotOutput } from "../../pkg/csi/index.js";
import { OperatorClient } from "../../pkg/operator/index.js";
import { RawNbdClient } from "../nbd/raw-client.js";
import { AlternatingWriter, cutProblem, writeNumber } from "./alternating-writer.js";
import { BLOCK, MiB, createVolume } from "./csi-fixtures.js";
import { failureCode, removeDataDir, startLocal, type LocalProcess } from "./local-process.js";

/**
 * Group snapshots (the CSI GroupController service) against the real `snapblock local` over its
 * unix socket: capabilities, the spec's codes, idempotency, members, restart; and the consistency
 * of the cut under a writer alternating numbered writes across three volumes through NBD.
 * GROUP_SNAPSHOTS sets how many group snapshots the consistency test takes (default 100).
 */
const GROUPS = Number(process.env.GROUP_SNAPSHOTS ?? 100);

interface GroupOut {
  groupSnapshotId: string;
  snapshots: CsiSnapshotOutput[];
  creationTime: { seconds: number; nanos: number } | null;
  readyToUse: boolean;
}

let local: LocalProcess;
let operator: OperatorClient;
const volumes: string[] = [];

const group = () => local.clients.groupController;
const createGroup = (name: string, sourceVolumeIds: string[], parameters: Record<string, string> = {}) =>
  callCsi<{ groupSnapshot: GroupOut }>(group(), "CreateVolumeGroupSnapshot", {
    name,
    sourceVolumeIds,
    parameters,
  });
const getGroup = (groupSnapshotId: string, snapshotIds: string[]) =>
  callCsi<{ groupSnapshot: GroupOut }>(group(), "GetVolumeGroupSnapshot", { groupSnapshotId, snapshotIds });
const deleteGroup = (groupSnapshotId: string, snapshotIds: string[]) =>
  callCsi(group(), "DeleteVolumeGroupSnapshot", { groupSnapshotId, snapshotIds });
const ids = (g: GroupOut) => g.snapshots.map((s) => s.snapshotId).sort();

beforeAll(async () => {
  local = await startLocal();
  operator = new OperatorClient(local.socketPath);
  for (const name of ["pvc-g1", "pvc-g2", "pvc-g3", "pvc-g4"]) {
    const { volume } = await createVolume(local.clients.controller, {
      name,
      capacityRange: { requiredBytes: 16 * MiB },
      volumeCapabilities: [BLOCK],
    });
    volumes.push(volume.volumeId);
  }
}, 120_000);

afterAll(async () => {
  operator?.close();
  if (local) {
    await local.stop();
    removeDataDir(local.dataDir);
  }
});

describe("GroupController service", () => {
  it("is advertised: plugin capability and its RPC capability", async () => {
    const plugin = await callCsi<{ capabilities: Array<{ service?: { type: string } | null }> }>(
      local.clients.identity,
      "GetPluginCapabilities",
      {},
    );
    expect(plugin.capabilities.map((c) => c.service?.type)).toContain("GROUP_CONTROLLER_SERVICE");
    const caps = await callCsi<{ capabilities: Array<{ rpc: { type: string } }> }>(
      group(),
      "GroupControllerGetCapabilities",
      {},
    );
    expect(caps.capabilities.map((c) => c.rpc.type)).toEqual(["CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT"]);
  });

  it("answers bad requests with the spec's codes, required fields before existence", async () => {
    const cases: Array<[string, () => Promise<unknown>, number]> = [
      ["no name", () => createGroup("", [volumes[0]!]), status.INVALID_ARGUMENT],
      ["no volumes", () => createGroup("g", []), status.INVALID_ARGUMENT],
      ["empty volume id", () => createGroup("g", [volumes[0]!, ""]), status.INVALID_ARGUMENT],
      ["a volume twice", () => createGroup("g", [volumes[0]!, volumes[0]!]), status.INVALID_ARGUMENT],
      ["no name, unknown volume", () => createGroup("", ["local/nope"]), status.INVALID_ARGUMENT],
      [
        "unknown parameter",
        () => createGroup("g", [volumes[0]!], { "snapblock.dev/x": "1" }),
        status.INVALID_ARGUMENT,
      ],
      ["unknown volume", () => createGroup("g", [volumes[0]!, "local/nope"]), status.NOT_FOUND],
      ["malformed volume id", () => createGroup("g", ["no-slash"]), status.NOT_FOUND],
      ["get without id", () => getGroup("", ["local/x"]), status.INVALID_ARGUMENT],
      ["get without snapshot ids", () => getGroup("local/x", []), status.INVALID_ARGUMENT],
      ["get unknown", () => getGroup("local/nope", ["local/x"]), status.NOT_FOUND],
      ["delete without id", () => deleteGroup("", ["local/x"]), status.INVALID_ARGUMENT],
      ["delete without snapshot ids", () => deleteGroup("local/nope", []), status.INVALID_ARGUMENT],
    ];
    for (const [what, call, code] of cases) {
      const failure = await failureCode(call());
      expect(failure.code, `${what}: ${failure.details}`).toBe(code);
      expect(failure.details.length, what).toBeGreaterThan(10);
    }
    // Deleting a group snapshot that does not exist succeeds (CSI spec).
    await deleteGroup("local/nope", ["local/x"]);
    // Nothing was made by any of them.
    const list = await callCsi<{ entries: unknown[] }>(local.clients.controller, "ListSnapshots", {});
    expect(list.entries).toEqual([]);
  });

  it("is idempotent by name, carries group_snapshot_id on members, survives a restart, and deletes", async () => {
    const [a, b, c, d] = volumes as [string, string, string, string];
    const { groupSnapshot: g } = await createGroup("vgs-1", [a, b, c]);
    expect(g.readyToUse).toBe(true);
    expect(g.creationTime?.seconds).toBeGreaterThan(0);
    expect(g.snapshots.map((s) => s.sourceVolumeId).sort()).toEqual([a, b, c].sort());
    for (const s of g.snapshots)
      expect(s).toMatchObject({ groupSnapshotId: g.groupSnapshotId, readyToUse: true });
    // Same name, same volumes in another order: the same group; other volumes: ALREADY_EXISTS.
    const again = await createGroup("vgs-1", [c, a, b]);
    expect(again.groupSnapshot.groupSnapshotId).toBe(g.groupSnapshotId);
    expect(ids(again.groupSnapshot)).toEqual(ids(g));
    expect((await failureCode(createGroup("vgs-1", [a, b, d]))).code).toBe(status.ALREADY_EXISTS);
    expect((await failureCode(createGroup("vgs-1", [a, b]))).code).toBe(status.ALREADY_EXISTS);
    // Members are snapshots like any other: listed, restorable, with the group's id.
    const listed = await callCsi<{ entries: Array<{ snapshot: CsiSnapshotOutput }> }>(
      local.clients.controller,
      "ListSnapshots",
      {},
    );
    expect(listed.entries.map((e) => e.snapshot.snapshotId).sort()).toEqual(ids(g));
    const one = await callCsi<{ snapshot: CsiSnapshotOutput }>(local.clients.controller, "GetSnapshot", {
      snapshotId: g.snapshots[0]!.snapshotId,
    });
    expect(one.snapshot).toMatchObject({ groupSnapshotId: g.groupSnapshotId });

    // The record is kept with the engine's metadata: a restart knows the group.
    await local.stop();
    local = await startLocal({ dataDir: local.dataDir });
    operator.close();
    operator = new OperatorClient(local.socketPath);
    const got = await getGroup(g.groupSnapshotId, ids(g));
    expect(ids(got.groupSnapshot)).toEqual(ids(g));

    // snapshot_ids that do not match the group: INVALID_ARGUMENT, and nothing is deleted.
    const foreign = (await failureCode(getGroup(g.groupSnapshotId, [...ids(g), "local/other"]))).code;
    expect(foreign).toBe(status.INVALID_ARGUMENT);
    const short = await failureCode(deleteGroup(g.groupSnapshotId, ids(g).slice(1)));
    expect(short.code, short.details).toBe(status.INVALID_ARGUMENT);
    expect(ids((await getGroup(g.groupSnapshotId, ids(g))).groupSnapshot)).toEqual(ids(g));

    // A member can be deleted alone (the spec allows it); the group then has the others.
    const [first, ...rest] = ids(g) as [string, ...string[]];
    await callCsi(local.clients.controller, "DeleteSnapshot", { snapshotId: first });
    expect(ids((await getGroup(g.groupSnapshotId, rest)).groupSnapshot)).toEqual(rest);
    expect(ids((await getGroup(g.groupSnapshotId, ids(g))).groupSnapshot)).toEqual(rest);

    await deleteGroup(g.groupSnapshotId, ids(g));
    expect((await failureCode(getGroup(g.groupSnapshotId, ids(g)))).code).toBe(status.NOT_FOUND);
    const after = await callCsi<{ entries: unknown[] }>(local.clients.controller, "ListSnapshots", {});
    expect(after.entries).toEqual([]);
    await deleteGroup(g.groupSnapshotId, ids(g)); // again: OK
    // The name is free again, for any volumes.
    const fresh = await createGroup("vgs-1", [a, d]);
    expect(fresh.groupSnapshot.snapshots).toHaveLength(2);
    await deleteGroup(fresh.groupSnapshot.groupSnapshotId, ids(fresh.groupSnapshot));
  }, 120_000);

  it(`takes ${GROUPS} consistent cuts of three volumes under an alternating writer`, async () => {
    const three = volumes.slice(0, 3);
    const exports = [];
    for (const volumeId of three) exports.push(await operator.startExport({ volumeId }, false));
    const writer = await AlternatingWriter.open(exports);
    writer.start();
    await writer.reach(3);
    const taken: Array<{ group: GroupOut; ackedBefore: number; sentAfter: number }> = [];
    const started = performance.now();
    for (let i = 0; i < GROUPS; i++) {
      const ackedBefore = writer.acked;
      const { groupSnapshot } = await createGroup(`cut-${i}`, three);
      taken.push({ group: groupSnapshot, ackedBefore, sentAfter: writer.sent });
    }
    const seconds = (performance.now() - started) / 1000;
    await writer.stop();
    for (const volumeId of three) await operator.stopExport({ volumeId });
    expect(writer.acked).toBeGreaterThan(GROUPS); // the writer ran all along
    const problems: string[] = [];
    for (const [i, t] of taken.entries()) {
      const numbers: number[] = [];
      for (const s of t.group.snapshots) {
        const e = await operator.startExport({ snapshotId: s.snapshotId }, true);
        const { client } = await RawNbdClient.open(e.socketPath, { name: e.exportName, structured: false });
        const reply = await client.readAt(0, 4096);
        numbers.push(writeNumber(reply.data!));
        await client.disconnect();
        await operator.stopExport({ snapshotId: s.snapshotId });
      }
      const problem = cutProblem(numbers, t.ackedBefore, t.sentAfter);
      if (problem) problems.push(`group ${i}: ${problem}`);
    }
    expect(problems).toEqual([]);
    console.log(
      `${GROUPS} group snapshots of 3 volumes under load in ${seconds.toFixed(1)} s; ${writer.acked} writes`,
    );
    for (const t of taken) await deleteGroup(t.group.groupSnapshotId, ids(t.group));
  }, 300_000);
});
