import { SnapblockError, isSnapblockError } from "../errors/index.js";
import { invalidArgument, notFound } from "./csi-status-error.js";
import type { EngineApi, EngineSnapshot } from "./engine-api.js";
import { engineNameFor, validateCsiName } from "./engine-names.js";
import type { CreateSnapshotRequest__Output } from "./generated/csi/v1/CreateSnapshotRequest.js";
import type { CreateSnapshotResponse } from "./generated/csi/v1/CreateSnapshotResponse.js";
import type { DeleteSnapshotRequest__Output } from "./generated/csi/v1/DeleteSnapshotRequest.js";
import type { DeleteSnapshotResponse } from "./generated/csi/v1/DeleteSnapshotResponse.js";
import type { ListSnapshotsRequest__Output } from "./generated/csi/v1/ListSnapshotsRequest.js";
import type { ListSnapshotsResponse } from "./generated/csi/v1/ListSnapshotsResponse.js";
import type { Snapshot } from "./generated/csi/v1/Snapshot.js";
import type { ControllerDeps } from "./controller-volumes.js";
import { snapshotLock, volumeLock } from "./operation-locks.js";
import { decodePageToken, paginate, validateMaxEntries } from "./page-token.js";
import { parseResourceId } from "./resource-id.js";
import { parseSnapshotParameters } from "./storage-class-parameters.js";
import type { CallScope } from "./unary-call.js";
import { META, snapshotMessage, volumeId } from "./volume-view.js";

/**
 * GetSnapshot (CSI v1.11+, alpha). The proto in proto/ is the v1.10.0 text, which does not have
 * it yet; the handler is registered as soon as the loaded proto defines the method.
 */
export interface GetSnapshotRequest {
  snapshotId: string;
  secrets?: Record<string, string>;
}
export interface GetSnapshotResponse {
  snapshot: Snapshot;
}

/** The snapshot RPCs of the Controller service: validate -> lock -> delegate -> map. */
export class ControllerSnapshots {
  constructor(private readonly deps: ControllerDeps) {}

  private get engine(): EngineApi {
    return this.deps.engine;
  }

  async createSnapshot(
    req: CreateSnapshotRequest__Output,
    scope: CallScope,
  ): Promise<CreateSnapshotResponse> {
    // validate
    const name = validateCsiName(req.name, "snapshot");
    if (req.sourceVolumeId === "") throw invalidArgument("source_volume_id is required");
    parseSnapshotParameters(req.parameters);
    const engineName = engineNameFor(name);
    const source = this.ownEngineName(req.sourceVolumeId);
    scope.note({ name, snapshotId: `${this.engine.nodeId}/${engineName}`, volumeId: req.sourceVolumeId });
    if (source === undefined) throw notFound("volume", req.sourceVolumeId, "source_volume_id");
    // lock: the snapshot name exclusively; the volume shared, so that many snapshots of one
    // volume proceed together while a delete or expand of that volume waits its turn (ABORTED).
    const claims = [snapshotLock(engineName, "exclusive"), volumeLock(source, "shared")];
    return this.deps.locks.with(claims, "CreateSnapshot", async () => {
      // delegate
      const existing = await this.engine.getSnapshot(engineName);
      if (existing) {
        // CSI spec, CreateSnapshot: same name and same source returns the existing snapshot;
        // "Snapshot already exists but is incompatible | 6 ALREADY_EXISTS" otherwise.
        const existingSource =
          existing.meta[META.sourceVolumeId] ?? volumeId(this.engine.nodeId, { name: existing.sourceVolume });
        if (existingSource !== req.sourceVolumeId) {
          throw new SnapblockError(
            "ALREADY_EXISTS",
            `a snapshot named ${JSON.stringify(name)} already exists of volume ${existingSource}, not of ${req.sourceVolumeId}; use another name`,
          );
        }
        return { snapshot: snapshotMessage(this.engine.nodeId, existing) };
      }
      let created: EngineSnapshot;
      try {
        created = await this.engine.createSnapshot({
          volume: source,
          name: engineName,
          meta: { [META.name]: name, [META.sourceVolumeId]: req.sourceVolumeId },
        });
      } catch (err) {
        if (isSnapblockError(err, "NOT_FOUND"))
          throw notFound("volume", req.sourceVolumeId, "source_volume_id");
        throw err;
      }
      // map
      return { snapshot: snapshotMessage(this.engine.nodeId, created) };
    });
  }

  async deleteSnapshot(
    req: DeleteSnapshotRequest__Output,
    scope: CallScope,
  ): Promise<DeleteSnapshotResponse> {
    if (req.snapshotId === "") throw invalidArgument("snapshot_id is required");
    scope.note({ snapshotId: req.snapshotId });
    const engineName = this.ownEngineName(req.snapshotId);
    // CSI spec, DeleteSnapshot: a snapshot that does not exist is deleted: 0 OK.
    if (engineName === undefined) return {};
    return this.deps.locks.with([snapshotLock(engineName, "exclusive")], "DeleteSnapshot", async () => {
      try {
        await this.engine.deleteSnapshot(engineName);
      } catch (err) {
        if (isSnapblockError(err, "NOT_FOUND")) return {};
        if (isSnapblockError(err, "BUSY")) {
          // CSI spec, DeleteSnapshot errors: "Snapshot in use | 9 FAILED_PRECONDITION".
          throw new SnapblockError(
            "BUSY",
            `snapshot ${req.snapshotId} is in use (exported for reading); stop using it first`,
            { cause: err },
          );
        }
        throw err;
      }
      return {};
    });
  }

  async listSnapshots(req: ListSnapshotsRequest__Output): Promise<ListSnapshotsResponse> {
    const maxEntries = validateMaxEntries(req.maxEntries);
    const listing = await this.engine.listSnapshots();
    const after = decodePageToken("snapshots", req.startingToken, listing.idWatermark);
    let items = [...listing.items].sort((a, b) => a.id - b.id);
    // CSI spec, ListSnapshots: the filters narrow the listing; an unknown snapshot_id or
    // source_volume_id yields an empty list, not an error.
    if (req.snapshotId !== "") {
      const name = this.ownEngineName(req.snapshotId);
      items = items.filter((s) => s.name === name);
    }
    if (req.sourceVolumeId !== "") {
      items = items.filter(
        (s) =>
          (s.meta[META.sourceVolumeId] ?? volumeId(this.engine.nodeId, { name: s.sourceVolume })) ===
          req.sourceVolumeId,
      );
    }
    const { page, nextToken } = paginate("snapshots", items, after, maxEntries);
    return { entries: page.map((s) => ({ snapshot: snapshotMessage(this.engine.nodeId, s) })), nextToken };
  }

  async getSnapshot(req: GetSnapshotRequest, scope: CallScope): Promise<GetSnapshotResponse> {
    if (!req.snapshotId) throw invalidArgument("snapshot_id is required");
    scope.note({ snapshotId: req.snapshotId });
    const engineName = this.ownEngineName(req.snapshotId);
    if (engineName === undefined) throw notFound("snapshot", req.snapshotId);
    return this.deps.locks.with([snapshotLock(engineName, "shared")], "GetSnapshot", async () => {
      const snapshot = await this.engine.getSnapshot(engineName);
      if (!snapshot) throw notFound("snapshot", req.snapshotId);
      return { snapshot: snapshotMessage(this.engine.nodeId, snapshot) };
    });
  }

  private ownEngineName(id: string): string | undefined {
    const parsed = parseResourceId(id);
    return parsed && parsed.nodeId === this.engine.nodeId ? parsed.engineName : undefined;
  }
}
