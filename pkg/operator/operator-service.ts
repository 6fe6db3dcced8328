import type { ServiceDefinition, UntypedServiceImplementation } from "@grpc/grpc-js";
import { SnapblockError } from "../errors/index.js";
import {
  RAW_USE_META,
  parseResourceId,
  snapshotDataMode,
  volumeFacts,
  type NodeEngine,
} from "../csi/index.js";
import type { EnginePointPins } from "../engine-api/index.js";
import type { Logger } from "../log/index.js";
import { unary, type CallScope } from "../rpc/index.js";
import type { DataPathExport, ExportKind, NodeDataPath } from "./data-path.js";
import type {
  WireDescribeSnapshotRequest,
  WireDescribeSnapshotResponse,
  WireExport,
  WireGetInfoResponse,
  WireListVolumeStatesResponse,
  WireStartExportRequest,
  WireStopExportRequest,
  WireStopExportResponse,
  WireVolumeState,
} from "./operator-messages.js";
import { loadOperatorProto } from "./operator-proto.js";
import { pointPinHandlers } from "./point-pins.js";
import { volumeUse } from "./volume-state.js";

export interface OperatorServiceOptions {
  /**
   * The node's pool (in-process): volumes, snapshots, the record of a volume's raw use, and the
   * pins of recovery points exported to Kubernetes.
   */
  engine: NodeEngine & EnginePointPins;
  dataPath: NodeDataPath;
  /** Absolute directory under which `snapblock volume attach` stages volumes (GetInfo). */
  attachDir: string;
  logger: Logger;
}

/**
 * The operator service of `snapblock local` (proto/operator.proto): the volume states and NBD
 * exports the CLI needs beyond CSI. Every call is validated, then delegated to the engine and the
 * data path, and mapped by pkg/rpc like every other snapblock RPC.
 */
export class OperatorService {
  constructor(private readonly options: OperatorServiceOptions) {}

  definition(): ServiceDefinition {
    return loadOperatorProto().service;
  }

  handlers(): UntypedServiceImplementation {
    const log = { logger: this.options.logger, service: "operator" };
    const quiet = { ...log, quiet: true };
    const { engine } = this.options;
    return {
      GetInfo: unary("GetInfo", quiet, (): Promise<WireGetInfoResponse> =>
        Promise.resolve({ nodeId: this.options.engine.nodeId, attachDir: this.options.attachDir }),
      ),
      ListVolumeStates: unary("ListVolumeStates", quiet, () => this.listVolumeStates()),
      DescribeSnapshot: unary("DescribeSnapshot", quiet, this.describeSnapshot.bind(this)),
      StartExport: unary("StartExport", log, this.startExport.bind(this)),
      StopExport: unary("StopExport", log, this.stopExport.bind(this)),
      ...pointPinHandlers({
        engineFor: (nodeId) => (nodeId === engine.nodeId ? engine : undefined),
        logger: this.options.logger,
      }),
    };
  }

  async listVolumeStates(): Promise<WireListVolumeStatesResponse> {
    const [listing, attachments] = await Promise.all([
      this.options.engine.listVolumes(),
      this.options.dataPath.attachments(),
    ]);
    const attachmentOf = new Map(attachments.map((a) => [a.engineName, a]));
    const exportOf = new Map(
      this.options.dataPath
        .exports()
        .filter((e) => e.kind === "volume")
        .map((e) => [e.engineName, e]),
    );
    const states: WireVolumeState[] = [];
    for (const volume of listing.items) {
      const use = volumeUse({
        filesystem: volumeFacts(volume).accessTypes.has("mount"),
        attachment: attachmentOf.get(volume.name),
        export: exportOf.get(volume.name),
      });
      if (!use) continue;
      const exported = exportOf.get(volume.name);
      states.push({
        volumeId: this.id(volume.name),
        ...use,
        export: exported ? wireExport(exported) : null,
      });
    }
    return { states };
  }

  async describeSnapshot(
    req: WireDescribeSnapshotRequest,
    scope: CallScope,
  ): Promise<WireDescribeSnapshotResponse> {
    const name = this.engineName(req.snapshotId, "snapshot_id", "snapshot", scope);
    const snapshot = await this.options.engine.getSnapshot(name);
    if (!snapshot) throw missing("snapshot", req.snapshotId);
    return { dataMode: snapshotDataMode(snapshot) };
  }

  async startExport(req: WireStartExportRequest, scope: CallScope): Promise<WireExport> {
    const { kind, id } = exportTarget(req);
    const engineName = this.engineName(id, `${kind}_id`, kind, scope);
    if (kind === "volume") {
      if (!(await this.options.engine.getVolume(engineName))) throw missing("volume", id);
      // Raw writes may leave no filesystem blkid recognises: from now on the node will not make
      // a filesystem over this volume's data (pkg/csi volume-mode.ts).
      if (!req.readOnly) await this.options.engine.updateVolumeMeta(engineName, RAW_USE_META);
    } else if (!(await this.options.engine.getSnapshot(engineName))) throw missing("snapshot", id);
    const started = await this.options.dataPath.startExport({
      kind,
      engineName,
      readOnly: req.readOnly,
      label: id,
    });
    return wireExport(started);
  }

  async stopExport(req: WireStopExportRequest, scope: CallScope): Promise<WireStopExportResponse> {
    const { kind, id } = exportTarget(req);
    const engineName = this.engineName(id, `${kind}_id`, kind, scope);
    return { stopped: await this.options.dataPath.stopExport(kind, engineName) };
  }

  private id(engineName: string): string {
    return `${this.options.engine.nodeId}/${engineName}`;
  }

  /** The engine name an id denotes on this node; NOT_FOUND for ids of other nodes or malformed ones. */
  private engineName(id: string, field: string, kind: ExportKind, scope: CallScope): string {
    if (id === "") throw new SnapblockError("INVALID_ARGUMENT", `${field} is required`);
    scope.note({ [`${kind}Id`]: id });
    const parsed = parseResourceId(id);
    if (!parsed || parsed.nodeId !== this.options.engine.nodeId) throw missing(kind, id);
    return parsed.engineName;
  }
}

function exportTarget(req: { volumeId: string; snapshotId: string }): { kind: ExportKind; id: string } {
  if ((req.volumeId === "") === (req.snapshotId === "")) {
    throw new SnapblockError("INVALID_ARGUMENT", "give exactly one of volume_id and snapshot_id");
  }
  return req.volumeId !== ""
    ? { kind: "volume", id: req.volumeId }
    : { kind: "snapshot", id: req.snapshotId };
}

function missing(kind: ExportKind, id: string): SnapblockError {
  return new SnapblockError("NOT_FOUND", `${kind} ${JSON.stringify(id)} does not exist`);
}

function wireExport(e: DataPathExport): WireExport {
  return { uri: e.uri, socketPath: e.socketPath, exportName: e.exportName, readOnly: e.readOnly };
}
