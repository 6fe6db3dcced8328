import { SnapblockError, isSnapblockError } from "../errors/index.js";
import {
  DEFAULT_GROUP_HOLD_MS,
  snapshotGroupAcrossNodes,
  type EngineApi,
  type EngineMeta,
  type GroupPart,
} from "../engine-api/index.js";
import type { Logger } from "../log/index.js";
import type { CallScope } from "../rpc/index.js";
import { engineNameFor, validateCsiName } from "./engine-names.js";
import type { CreateVolumeGroupSnapshotRequest__Output } from "./generated/csi/v1/CreateVolumeGroupSnapshotRequest.js";
import type { CreateVolumeGroupSnapshotResponse } from "./generated/csi/v1/CreateVolumeGroupSnapshotResponse.js";
import type { DeleteVolumeGroupSnapshotRequest__Output } from "./generated/csi/v1/DeleteVolumeGroupSnapshotRequest.js";
import type { DeleteVolumeGroupSnapshotResponse } from "./generated/csi/v1/DeleteVolumeGroupSnapshotResponse.js";
import type { GetVolumeGroupSnapshotRequest__Output } from "./generated/csi/v1/GetVolumeGroupSnapshotRequest.js";
import type { GetVolumeGroupSnapshotResponse } from "./generated/csi/v1/GetVolumeGroupSnapshotResponse.js";
import type { Snapshot } from "./generated/csi/v1/Snapshot.js";
import type { VolumeGroupSnapshot } from "./generated/csi/v1/VolumeGroupSnapshot.js";
import { locate, type ControllerDeps } from "./controller-volumes.js";
import { groupSnapshotLock, snapshotLock, volumeLock, type LockClaim } from "./operation-locks.js";
import { invalidArgument, notFound } from "./request-errors.js";
import { formatResourceId } from "./resource-id.js";
import { parseGroupSnapshotParameters } from "./storage-class-parameters.js";
import { formatDataMode, volumeDataMode } from "./volume-mode.js";
import { META, snapshotMessage, volumeFacts } from "./volume-view.js";

/**
 * Most volumes in one group snapshot: the group's record (kept with the node's metadata, bounded
 * at 16 KiB) lists their ids.
 */
export const MAX_GROUP_VOLUMES = 64;

/** Keys of a group snapshot's record on its home node (EngineApi.putGroupRecord). */
const RECORD = {
  name: "csi.name",
  /** "creating" until every member is taken, then "ready". */
  state: "csi.state",
  /** JSON array of the source volume ids, sorted. */
  sourceVolumeIds: "csi.sourceVolumeIds",
  createdAtMs: "csi.createdAtMs",
} as const;

export interface GroupControllerDeps extends ControllerDeps {
  logger?: Logger;
  /** Bound of the write hold of a group across nodes (default 2 s). */
  holdMs?: number;
}

interface Member {
  sourceVolumeId: string;
  engine: EngineApi;
  nodeId: string;
  volume: string;
  /** Engine name of the member snapshot. */
  name: string;
  snapshotId: string;
}

/**
 * The CSI GroupController service: group snapshots, validate -> lock -> delegate -> map.
 *
 * A group snapshot's id is "<home node>/<engine name>", the home node being the node of its first
 * source volume (in id order); its record lives in that node's metadata. Its members are ordinary
 * snapshots of each volume's node, named from the group's name and the volume's id (so a retry
 * finds them), each carrying group_snapshot_id. The cut is taken by snapshotGroupAcrossNodes:
 * one commit on one node, a bounded hold of writes across several.
 */
export class ControllerGroupSnapshots {
  private readonly holdMs: number;

  constructor(private readonly deps: GroupControllerDeps) {
    this.holdMs = deps.holdMs ?? DEFAULT_GROUP_HOLD_MS;
  }

  async createVolumeGroupSnapshot(
    req: CreateVolumeGroupSnapshotRequest__Output,
    scope: CallScope,
  ): Promise<CreateVolumeGroupSnapshotResponse> {
    // validate: every required field before any existence (CSI spec, error scheme)
    const name = validateCsiName(req.name, "group snapshot");
    const sources = req.sourceVolumeIds;
    if (sources.length === 0) throw invalidArgument("source_volume_ids is required");
    if (sources.some((id) => id === "")) throw invalidArgument("source_volume_ids contains an empty id");
    const twice = sources.find((id, i) => sources.indexOf(id) !== i);
    if (twice !== undefined) throw invalidArgument(`source_volume_ids names volume ${twice} twice`);
    if (sources.length > MAX_GROUP_VOLUMES) {
      throw invalidArgument(
        `a group snapshot takes at most ${MAX_GROUP_VOLUMES} volumes, not ${sources.length}; split the group`,
      );
    }
    const params = parseGroupSnapshotParameters(req.parameters);
    const sorted = [...sources].sort();
    const groupName = engineNameFor(name);
    scope.note({ name });
    const members = sorted.map((id) => this.member(name, id));
    const missing = members.findIndex((m) => m === undefined);
    if (missing >= 0) throw notFound("volume", sorted[missing]!, "source_volume_ids");
    const all = members as Member[];
    const home = all[0]!;
    const groupId = formatResourceId({ nodeId: home.nodeId, engineName: groupName });
    scope.note({ groupSnapshotId: groupId });
    // lock: the group and its member names exclusively, the volumes shared (single snapshots of
    // them go on; a delete or expand of one of them meanwhile is ABORTED).
    const claims: LockClaim[] = [
      groupSnapshotLock(groupName, "exclusive"),
      ...all.map((m) => volumeLock(m.volume, "shared")),
      ...all.map((m) => snapshotLock(m.name, "exclusive")),
    ];
    return this.deps.locks.with(claims, "CreateVolumeGroupSnapshot", async () => {
      const existing = await this.findRecord(groupName);
      if (existing) {
        const theirs = parseSources(existing.record);
        // CSI spec, CreateVolumeGroupSnapshot: the same name and the same source volumes is the
        // same group; another set is ALREADY_EXISTS.
        if (theirs.join("\n") !== sorted.join("\n")) {
          throw new SnapblockError(
            "ALREADY_EXISTS",
            `a group snapshot named ${JSON.stringify(name)} already exists of volumes ${theirs.join(", ")}, not of ${sorted.join(", ")}; use another name`,
          );
        }
        if (existing.record[RECORD.state] === "ready") {
          return { groupSnapshot: await this.view(groupId, existing.record, all) };
        }
        // An earlier attempt stopped half way (a controller restart): what it took may be from
        // another instant than what is still to take, so it goes, and the group is taken anew.
        await this.deleteMembers(all);
      }
      const record: EngineMeta = {
        [RECORD.name]: name,
        [RECORD.state]: "creating",
        [RECORD.sourceVolumeIds]: JSON.stringify(sorted),
      };
      await home.engine.putGroupRecord(groupName, record);
      let createdAtMs: number;
      try {
        const parts = await this.parts(name, groupId, all);
        const taken = await snapshotGroupAcrossNodes(parts, {
          holdMs: params.holdMs ?? this.holdMs,
          group: groupId,
          ...(this.deps.logger ? { logger: this.deps.logger } : {}),
        });
        createdAtMs = Math.max(...taken.flat().map((s) => s.createdAt.getTime()));
      } catch (err) {
        await home.engine.deleteGroupRecord(groupName);
        if (isSnapblockError(err, "NOT_FOUND")) {
          throw new SnapblockError("NOT_FOUND", `a source volume of the group went away: ${err.message}`, {
            cause: err,
          });
        }
        throw err;
      }
      const ready = { ...record, [RECORD.state]: "ready", [RECORD.createdAtMs]: String(createdAtMs) };
      await home.engine.putGroupRecord(groupName, ready);
      return { groupSnapshot: await this.view(groupId, ready, all) };
    });
  }

  async getVolumeGroupSnapshot(
    req: GetVolumeGroupSnapshotRequest__Output,
    scope: CallScope,
  ): Promise<GetVolumeGroupSnapshotResponse> {
    if (req.groupSnapshotId === "") throw invalidArgument("group_snapshot_id is required");
    if (req.snapshotIds.length === 0) throw invalidArgument("snapshot_ids is required");
    scope.note({ groupSnapshotId: req.groupSnapshotId });
    const group = await this.loadGroup(req.groupSnapshotId, "shared", "GetVolumeGroupSnapshot", async (g) => {
      const present = await this.present(g.members);
      checkSnapshotIds(req.snapshotIds, g.members, present);
      return { groupSnapshot: await this.view(req.groupSnapshotId, g.record, g.members, present) };
    });
    // CSI spec, GetVolumeGroupSnapshot: a group snapshot that does not exist is NOT_FOUND.
    if (!group)
      throw new SnapblockError(
        "NOT_FOUND",
        `group snapshot ${JSON.stringify(req.groupSnapshotId)} does not exist`,
      );
    return group;
  }

  async deleteVolumeGroupSnapshot(
    req: DeleteVolumeGroupSnapshotRequest__Output,
    scope: CallScope,
  ): Promise<DeleteVolumeGroupSnapshotResponse> {
    if (req.groupSnapshotId === "") throw invalidArgument("group_snapshot_id is required");
    if (req.snapshotIds.length === 0) throw invalidArgument("snapshot_ids is required");
    scope.note({ groupSnapshotId: req.groupSnapshotId });
    // CSI spec, DeleteVolumeGroupSnapshot: a group snapshot that does not exist is deleted (OK).
    await this.loadGroup(
      req.groupSnapshotId,
      "exclusive",
      "DeleteVolumeGroupSnapshot",
      async (g, groupName, engine) => {
        const present = await this.present(g.members);
        // Nothing is deleted on a mismatch (CSI spec: "Snapshot list mismatch", INVALID_ARGUMENT).
        checkSnapshotIds(req.snapshotIds, g.members, present);
        await this.deleteMembers(g.members);
        await engine.deleteGroupRecord(groupName);
      },
    );
    return {};
  }

  /** The member for a source volume id, or undefined when the id names no volume here. */
  private member(groupCsiName: string, sourceVolumeId: string): Member | undefined {
    const found = locate(this.deps.engine, sourceVolumeId);
    if (!found) return undefined;
    // A NUL cannot be in a CSI name, so no single snapshot's name maps to a member's.
    const name = engineNameFor(`${groupCsiName}\u0000${sourceVolumeId}`);
    return {
      sourceVolumeId,
      engine: found.engine,
      nodeId: found.nodeId,
      volume: found.engineName,
      name,
      snapshotId: formatResourceId({ nodeId: found.nodeId, engineName: name }),
    };
  }

  /** The members grouped by node, with the metadata each snapshot keeps. */
  private async parts(name: string, groupId: string, members: Member[]): Promise<GroupPart[]> {
    const byNode = new Map<string, GroupPart>();
    for (const m of members) {
      const volume = await m.engine.getVolume(m.volume);
      if (!volume) throw notFound("volume", m.sourceVolumeId, "source_volume_ids");
      const part = byNode.get(m.nodeId) ?? { engine: m.engine, members: [] };
      part.members.push({
        volume: m.volume,
        name: m.name,
        meta: {
          [META.name]: name,
          [META.sourceVolumeId]: m.sourceVolumeId,
          [META.dataMode]: formatDataMode(volumeDataMode(volumeFacts(volume))),
          [META.groupSnapshotId]: groupId,
        },
      });
      byNode.set(m.nodeId, part);
    }
    return [...byNode.values()];
  }

  /** The record of a group of this engine name on any node (a node that does not answer is skipped). */
  private async findRecord(groupName: string): Promise<{ record: EngineMeta } | undefined> {
    const answers = await Promise.allSettled(
      this.deps.engine.nodeEngines().map((e) => e.getGroupRecord(groupName)),
    );
    for (const a of answers) {
      if (a.status === "fulfilled" && a.value) return { record: a.value };
      if (a.status === "rejected" && !isSnapblockError(a.reason, "CLOSED")) throw a.reason;
    }
    return undefined;
  }

  /** Runs fn with the group locked and its record read; undefined when there is no such group. */
  private async loadGroup<T>(
    groupSnapshotId: string,
    mode: "shared" | "exclusive",
    operation: string,
    fn: (g: { record: EngineMeta; members: Member[] }, groupName: string, engine: EngineApi) => Promise<T>,
  ): Promise<T | undefined> {
    const found = locate(this.deps.engine, groupSnapshotId);
    if (!found) return undefined;
    return this.deps.locks.with([groupSnapshotLock(found.engineName, mode)], operation, async () => {
      const record = await found.engine.getGroupRecord(found.engineName);
      // A group still being taken (or left half way) does not exist yet for the CO.
      if (!record || record[RECORD.state] !== "ready") return undefined;
      const name = record[RECORD.name] ?? "";
      const members = parseSources(record).map((id) => this.member(name, id) ?? unroutable(name, id));
      return fn({ record, members }, found.engineName, found.engine);
    });
  }

  /** The members that still exist (members may be deleted alone, by DeleteSnapshot). */
  private async present(members: Member[]): Promise<Map<string, Snapshot>> {
    const out = new Map<string, Snapshot>();
    for (const m of members) {
      const s = await m.engine.getSnapshot(m.name);
      if (s) out.set(m.snapshotId, snapshotMessage(m.nodeId, s));
    }
    return out;
  }

  private async view(
    groupId: string,
    record: EngineMeta,
    members: Member[],
    known?: Map<string, Snapshot>,
  ): Promise<VolumeGroupSnapshot> {
    const present = known ?? (await this.present(members));
    const ms = Number(record[RECORD.createdAtMs] ?? "0");
    return {
      groupSnapshotId: groupId,
      snapshots: members.flatMap((m) => {
        const s = present.get(m.snapshotId);
        return s ? [s] : [];
      }),
      creationTime: { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 },
      // Every member is complete when it exists (redirect-on-write).
      readyToUse: true,
    };
  }

  private async deleteMembers(members: Member[]): Promise<void> {
    for (const m of members) {
      try {
        await m.engine.deleteSnapshot(m.name);
      } catch (err) {
        if (isSnapblockError(err, "NOT_FOUND")) continue;
        if (isSnapblockError(err, "BUSY")) {
          // CSI spec, DeleteVolumeGroupSnapshot errors: a snapshot in use is FAILED_PRECONDITION.
          throw new SnapblockError(
            "BUSY",
            `snapshot ${m.snapshotId} of the group is in use (exported for reading); stop using it first`,
            { cause: err },
          );
        }
        throw err;
      }
    }
  }
}

/**
 * CSI spec, DeleteVolumeGroupSnapshot / GetVolumeGroupSnapshot: snapshot_ids must match the
 * group; a mismatch is INVALID_ARGUMENT. Here: every id given is one of the group's members, and
 * every member that still exists is given (members deleted alone may be left out).
 */
function checkSnapshotIds(given: string[], members: Member[], present: Map<string, Snapshot>): void {
  const ids = new Set(members.map((m) => m.snapshotId));
  const foreign = given.filter((id) => !ids.has(id));
  const left = [...present.keys()].filter((id) => !given.includes(id));
  if (foreign.length > 0 || left.length > 0) {
    throw invalidArgument(
      `snapshot_ids do not match the group snapshot's members${foreign.length > 0 ? `: not members: ${foreign.join(", ")}` : ""}${left.length > 0 ? `; members not listed: ${left.join(", ")}` : ""}`,
    );
  }
}

function parseSources(record: EngineMeta): string[] {
  try {
    const list = JSON.parse(record[RECORD.sourceVolumeIds] ?? "[]") as unknown;
    if (Array.isArray(list) && list.every((v) => typeof v === "string")) return list;
  } catch (err) {
    throw new SnapblockError("CORRUPT", "a group snapshot record has unreadable source volume ids", {
      cause: err,
    });
  }
  throw new SnapblockError("CORRUPT", "a group snapshot record has unreadable source volume ids");
}

function unroutable(name: string, id: string): never {
  throw new SnapblockError(
    "CLOSED",
    `group snapshot ${JSON.stringify(name)} has a member of volume ${id}, whose node this controller does not know`,
  );
}
