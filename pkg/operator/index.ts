/**
 * pkg/operator: the operator service of `snapblock local` (proto/operator.proto): volume states
 * and NBD exports for the CLI, beyond what CSI offers, over an interface to the node's data path
 * (NodeDataPath); and the pins of exported recovery points, which the controller serves too in
 * cluster mode. This is the module's only entry point.
 */
export { OperatorService, type OperatorServiceOptions } from "./operator-service.js";
export { OperatorClient } from "./operator-client.js";
export {
  controllerOperatorService,
  pointPinHandlers,
  pointPinner,
  type PinnableEngine,
  type PointPinsOptions,
} from "./point-pins.js";
export type { DataPathAttachment, DataPathExport, ExportKind, NodeDataPath } from "./data-path.js";
export type {
  VolumeStateName,
  WireExport,
  WireGetInfoResponse,
  WireListVolumeStatesResponse,
  WireVolumeState,
} from "./operator-messages.js";
