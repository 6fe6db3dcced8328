import { SnapblockError, isSnapblockError } from "../errors/index.js";
import { invalidArgument, notFound } from "./request-errors.js";
import { engineNameFor, validateCsiName } from "./engine-names.js";
import type { CreateSnapshotRequest__Output } from "./generated/csi/v1/CreateSnapshotRequest.js";
import type { CreateSnapshotResponse } from "./generated/csi/v1/CreateSnapshotResponse.js";
import type { DeleteSnapshotRequest__Output } from "./generated/csi/v1/DeleteSnapshotRequest.js";
import type { DeleteSnapshotResponse } from "./generated/csi/v1/DeleteSnapshotResponse.js";
import type { GetSnapshotRequest__Output } from "./generated/csi/v1/GetSnapshotRequest.js";
import type { GetSnapshotResponse } from "./generated/csi/v1/GetSnapshotResponse.js";
import type { ListSnapshotsRequest__Output } from "./generated/csi/v1/ListSnapshotsRequest.js";
import type { ListSnapshotsResponse } from "./generated/csi/v1/ListSnapshotsResponse.js";
import { locate, type ControllerDeps } from "./controller-volumes.js";
import { snapshotLock, volumeLock } from "./operation-locks.js";
import { compareCursors, decodePageToken, paginate, validateMaxEntries } from "./page-token.js";
import {
  PARAM_MAX_SNAPSHOTS,
  PARAM_MAX_SNAPSHOT_SPACE,
  parseSnapshotParameters,
} from "./storage-class-parameters.js";
import { REPLICA_META } from "../engine-api/index.js";
import { formatDataMode, volumeDataMode } from "./volume-mode.js";
import { META, snapshotId, snapshotMessage, volumeFacts, volumeId, type VolumeFacts } from "./volume-view.js";
import type { CallScope } from "../rpc/index.js";
import type { EngineSnapshot, EngineSnapshotLimits } from "../engine-api/index.js";

/** The snapshot RPCs of the Controller service: validate -> lock -> delegate -> map. */
export class ControllerSnapshots {
  constructor(private readonly deps: ControllerDeps) {}

  async createSnapshot(
    req: CreateSnapshotRequest__Output,
    scope: CallScope,
  ): Promise<CreateSnapshotResponse> {
    // validate
    const name = validateCsiName(req.name, "snapshot");
    if (req.sourceVolumeId === "") throw invalidArgument("source_volume_id is required");
    const params = parseSnapshotParameters(req.parameters);
    const engineName = engineNameFor(name);
    // A snapshot lives in the pool of its volume: the node of the volume is the snapshot's.
    const found = locate(this.deps.engine, req.sourceVolumeId);
    scope.note({ name, volumeId: req.sourceVolumeId });
    if (found === undefined) throw notFound("volume", req.sourceVolumeId, "source_volume_id");
    const { engine, nodeId, engineName: source } = found;
    scope.note({ snapshotId: snapshotId(nodeId, { name: engineName }) });
    // lock: the snapshot name exclusively; the volume shared, so that many snapshots of one
    // volume proceed together while a delete or expand of that volume waits its turn (ABORTED).
    const claims = [snapshotLock(engineName, "exclusive"), volumeLock(source, "shared")];
    return this.deps.locks.with(claims, "CreateSnapshot", async () => {
      // delegate
      const existing = await engine.getSnapshot(engineName);
      if (existing) {
        // CSI spec, CreateSnapshot: same name and same source returns the existing snapshot;
        // "Snapshot already exists but is incompatible | 6 ALREADY_EXISTS" otherwise.
        const existingSource =
          existing.meta[META.sourceVolumeId] ?? volumeId(nodeId, { name: existing.sourceVolume });
        if (existingSource !== req.sourceVolumeId) {
          throw new SnapblockError(
            "ALREADY_EXISTS",
            `a snapshot named ${JSON.stringify(name)} already exists of volume ${existingSource}, not of ${req.sourceVolumeId}; use another name`,
          );
        }
        return { snapshot: snapshotMessage(nodeId, existing) };
      }
      // The StorageClass's snapshot limits travel with the volume; the engine checks them in the
      // same step as it takes the snapshot (CSI spec, CreateSnapshot errors: RESOURCE_EXHAUSTED).
      // What the volume holds (raw block data or a filesystem) goes with the snapshot, so that a
      // restore keeps the mode of the data even after the volume is gone (volume-mode.ts).
      const volume = await engine.getVolume(source);
      if (!volume) throw notFound("volume", req.sourceVolumeId, "source_volume_id");
      const limits = snapshotLimits(volumeFacts(volume));
      let created: EngineSnapshot;
      try {
        created = await engine.createSnapshot({
          volume: source,
          name: engineName,
          meta: {
            [META.name]: name,
            [META.sourceVolumeId]: req.sourceVolumeId,
            [META.dataMode]: formatDataMode(volumeDataMode(volumeFacts(volume))),
            ...params.co,
            // Replicas on other nodes, and what an incremental replica of the next snapshot
            // compares with (cluster mode; docs/cluster.md).
            ...(params.replicas > 0
              ? {
                  [REPLICA_META.replicas]: String(params.replicas),
                  [REPLICA_META.volume]: req.sourceVolumeId,
                }
              : {}),
          },
          freezeFilesystem: params.freezeFilesystem,
          ...(limits ? { limits } : {}),
        });
      } catch (err) {
        if (isSnapblockError(err, "NOT_FOUND"))
          throw notFound("volume", req.sourceVolumeId, "source_volume_id");
        throw err;
      }
      // map
      return { snapshot: snapshotMessage(nodeId, created) };
    });
  }

  async deleteSnapshot(
    req: DeleteSnapshotRequest__Output,
    scope: CallScope,
  ): Promise<DeleteSnapshotResponse> {
    if (req.snapshotId === "") throw invalidArgument("snapshot_id is required");
    scope.note({ snapshotId: req.snapshotId });
    const found = locate(this.deps.engine, req.snapshotId);
    // CSI spec, DeleteSnapshot: a snapshot that does not exist is deleted: 0 OK.
    if (found === undefined) return {};
    const { engine, engineName } = found;
    return this.deps.locks.with([snapshotLock(engineName, "exclusive")], "DeleteSnapshot", async () => {
      try {
        await engine.deleteSnapshot(engineName);
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
    const listings = await Promise.all(
      this.deps.engine
        .nodeEngines()
        .map(async (e) => ({ nodeId: e.nodeId, listing: await e.listSnapshots() })),
    );
    const marks = new Map(listings.map((l) => [l.nodeId, l.listing.idWatermark]));
    const after = decodePageToken("snapshots", req.startingToken, marks);
    let items = listings
      .flatMap((l) => l.listing.items.map((item) => ({ nodeId: l.nodeId, id: item.id, item })))
      .sort(compareCursors);
    // CSI spec, ListSnapshots: the filters narrow the listing; an unknown snapshot_id or
    // source_volume_id yields an empty list, not an error.
    if (req.snapshotId !== "") {
      items = items.filter((s) => snapshotId(s.nodeId, s.item) === req.snapshotId);
    }
    if (req.sourceVolumeId !== "") {
      items = items.filter(
        ({ nodeId, item }) =>
          (item.meta[META.sourceVolumeId] ?? volumeId(nodeId, { name: item.sourceVolume })) ===
          req.sourceVolumeId,
      );
    }
    const { page, nextToken } = paginate("snapshots", items, after, maxEntries);
    return { entries: page.map((s) => ({ snapshot: snapshotMessage(s.nodeId, s.item) })), nextToken };
  }

  /**
   * GetSnapshot (CSI v1.11+, alpha): the current information of one snapshot. CSI spec,
   * GetSnapshot errors: "Snapshot does not exist | 5 NOT_FOUND"; a missing snapshot_id is the
   * CO's error (INVALID_ARGUMENT), checked first.
   */
  async getSnapshot(req: GetSnapshotRequest__Output, scope: CallScope): Promise<GetSnapshotResponse> {
    if (req.snapshotId === "") throw invalidArgument("snapshot_id is required");
    scope.note({ snapshotId: req.snapshotId });
    const found = locate(this.deps.engine, req.snapshotId);
    if (found === undefined) throw notFound("snapshot", req.snapshotId);
    const { engine, engineName, nodeId } = found;
    return this.deps.locks.with([snapshotLock(engineName, "shared")], "GetSnapshot", async () => {
      const snapshot = await engine.getSnapshot(engineName);
      if (!snapshot) throw notFound("snapshot", req.snapshotId);
      return { snapshot: snapshotMessage(nodeId, snapshot) };
    });
  }
}

/** The engine's form of a volume's snapshot limits, named after the StorageClass parameters. */
function snapshotLimits(facts: VolumeFacts): EngineSnapshotLimits | undefined {
  if (facts.maxSnapshots === undefined && facts.maxSnapshotBytes === undefined) return undefined;
  return {
    ...(facts.maxSnapshots !== undefined ? { maxSnapshots: facts.maxSnapshots } : {}),
    ...(facts.maxSnapshotBytes !== undefined ? { maxSnapshotBytes: facts.maxSnapshotBytes } : {}),
    names: {
      maxSnapshots: `StorageClass parameter ${PARAM_MAX_SNAPSHOTS}`,
      maxSnapshotBytes: `StorageClass parameter ${PARAM_MAX_SNAPSHOT_SPACE}`,
    },
  };
}
