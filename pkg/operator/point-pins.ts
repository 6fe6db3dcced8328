import type { ServiceDefinition, UntypedServiceImplementation } from "@grpc/grpc-js";
import { SnapblockError, StatusError, isSnapblockError } from "../errors/index.js";
import { parseResourceId } from "../csi/index.js";
import { POINT_PREFIX, type EngineApi, type EnginePointPins } from "../engine-api/index.js";
import type { Logger } from "../log/index.js";
import { unary, type CallScope } from "../rpc/index.js";
import type {
  WireListPinnedPointsRequest,
  WireListPinnedPointsResponse,
  WireSetPointPinnedRequest,
  WireSetPointPinnedResponse,
} from "./operator-messages.js";
import { loadOperatorProto } from "./operator-proto.js";

/** A node's engine that can pin its recovery points: a LocalEngine, or a node's engine service. */
export type PinnableEngine = EngineApi & EnginePointPins;

export interface PointPinsOptions {
  /**
   * The engine holding node `nodeId`'s pool, or undefined when this process serves no such node
   * (its ids are then NOT_FOUND). `snapblock local`: its own engine; the controller: the node's
   * engine service (ClusterEngine.engineFor), so that the pin is made where the point is thinned.
   */
  engineFor: (nodeId: string) => PinnableEngine | undefined;
  logger: Logger;
}

/**
 * SetPointPinned and ListPinnedPoints of the operator service (proto/operator.proto): pins of
 * recovery points exported to Kubernetes (docs/protection.md, "Exported points"), by CSI id, on
 * the node the id names. Served by `snapblock local` (OperatorService) and, alone, by the
 * controller in cluster mode (controllerOperatorService).
 */
export function pointPinHandlers(o: PointPinsOptions): UntypedServiceImplementation {
  const log = { logger: o.logger, service: "operator" };
  return {
    SetPointPinned: unary("SetPointPinned", log, (req: WireSetPointPinnedRequest, scope) =>
      setPointPinned(o, req, scope),
    ),
    ListPinnedPoints: unary(
      "ListPinnedPoints",
      { ...log, quiet: true },
      (req: WireListPinnedPointsRequest, scope) => listPinnedPoints(o, req, scope),
    ),
  };
}

/**
 * The operator service as the controller serves it in cluster mode: the pins only. Exports and
 * volume states belong to a node's data path, which the controller has not got: those calls answer
 * UNIMPLEMENTED naming the Operator service (the CLI then says what needs `snapblock local`, or
 * shows what it cannot know as "?").
 */
export function controllerOperatorService(o: PointPinsOptions): {
  definition: ServiceDefinition;
  implementation: UntypedServiceImplementation;
} {
  const definition = loadOperatorProto().service;
  const implementation = pointPinHandlers(o);
  for (const method of Object.keys(definition)) {
    implementation[method] ??= unary(method, { logger: o.logger, service: "operator", quiet: true }, () =>
      Promise.reject(
        new StatusError(
          "UNIMPLEMENTED",
          `the controller's Operator service has only the pins of recovery points; ${method} needs \`snapblock local\``,
        ),
      ),
    );
  }
  return { definition, implementation };
}

async function setPointPinned(
  o: PointPinsOptions,
  req: WireSetPointPinnedRequest,
  scope: CallScope,
): Promise<WireSetPointPinnedResponse> {
  return { pinned: await pinPointById(o, req.snapshotId, req.pinned, scope) };
}

/**
 * Pins (or releases) the recovery point a CSI snapshot id names, on the node the id names; returns
 * whether it is pinned now. NOT_FOUND when there is no such point (or node). SetPointPinned, and
 * the controller's pins of the points VolumeSnapshotContents name (pointPinner), go through here.
 */
async function pinPointById(
  o: PointPinsOptions,
  snapshotId: string,
  pinned: boolean,
  scope?: CallScope,
): Promise<boolean> {
  const { engine, engineName } = locate(o, snapshotId, "snapshot_id", "snapshot", scope);
  try {
    return (await engine.pinPoint(engineName, pinned)).pinned === true;
  } catch (err) {
    if (isSnapblockError(err, "NOT_FOUND"))
      throw new SnapblockError(
        "NOT_FOUND",
        `recovery point ${JSON.stringify(snapshotId)} does not exist (thinned by its policy, or deleted)`,
        { cause: err },
      );
    throw err;
  }
}

/**
 * The pins as the controller's reconciler of VolumeSnapshotContents uses them (pkg/k8s
 * ExportedPointPins): which ids name recovery points, and pinning one through pinPointById.
 */
export function pointPinner(o: PointPinsOptions): {
  pointNode(snapshotId: string): string | undefined;
  pin(snapshotId: string): Promise<void>;
} {
  return {
    pointNode: (snapshotId) => {
      const parsed = parseResourceId(snapshotId);
      return parsed?.engineName.startsWith(POINT_PREFIX) ? parsed.nodeId : undefined;
    },
    pin: async (snapshotId) => {
      await pinPointById(o, snapshotId, true);
    },
  };
}

async function listPinnedPoints(
  o: PointPinsOptions,
  req: WireListPinnedPointsRequest,
  scope: CallScope,
): Promise<WireListPinnedPointsResponse> {
  const { engine, nodeId, engineName } = locate(o, req.volumeId, "volume_id", "volume", scope);
  const { items } = await engine.listSnapshots();
  return {
    snapshotIds: items
      .filter((s) => s.pinned && s.sourceVolume === engineName)
      .map((s) => `${nodeId}/${s.name}`),
  };
}

/** The engine and engine name an id denotes; NOT_FOUND for ids of unknown nodes or malformed ones. */
function locate(
  o: PointPinsOptions,
  id: string,
  field: string,
  kind: "volume" | "snapshot",
  scope: CallScope | undefined,
): { engine: PinnableEngine; nodeId: string; engineName: string } {
  if (id === "") throw new SnapblockError("INVALID_ARGUMENT", `${field} is required`);
  scope?.note({ [`${kind}Id`]: id });
  const parsed = parseResourceId(id);
  const engine = parsed ? o.engineFor(parsed.nodeId) : undefined;
  if (!parsed || !engine)
    throw new SnapblockError("NOT_FOUND", `${kind} ${JSON.stringify(id)} does not exist`);
  return { engine, nodeId: parsed.nodeId, engineName: parsed.engineName };
}
