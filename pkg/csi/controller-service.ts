import type { UntypedServiceImplementation } from "@grpc/grpc-js";
import { ControllerSnapshots } from "./controller-snapshots.js";
import { ControllerVolumes } from "./controller-volumes.js";
import { ControllerGroupSnapshots } from "./controller-group-snapshots.js";
import type { GroupControllerGetCapabilitiesResponse } from "./generated/csi/v1/GroupControllerGetCapabilitiesResponse.js";
import type { ControllerGetCapabilitiesResponse } from "./generated/csi/v1/ControllerGetCapabilitiesResponse.js";
import type { ControllerServiceCapability } from "./generated/csi/v1/ControllerServiceCapability.js";
import { OperationLocks } from "./operation-locks.js";
import type { Logger } from "../log/index.js";
import { StatusError } from "../errors/index.js";
import { unary, type CallObserver } from "../rpc/index.js";
import type { EngineApi } from "../engine-api/index.js";

export interface ControllerOptions {
  engine: EngineApi;
  logger: Logger;
  /** Metrics hooks, called for every RPC. */
  observer?: CallObserver;
  /** Bound of the write hold of a group snapshot across nodes (default 2 s). */
  groupHoldMs?: number;
}

/** The Controller and GroupController services of one process, sharing their locks. */
export interface ControllerServices {
  controller: UntypedServiceImplementation;
  groupController: UntypedServiceImplementation;
}

/** Controller capabilities: every RPC group the Controller service serves (docs/csi.md). */
export const CONTROLLER_CAPABILITIES = [
  "CREATE_DELETE_VOLUME",
  "CREATE_DELETE_SNAPSHOT",
  "LIST_SNAPSHOTS",
  "GET_SNAPSHOT",
  "LIST_VOLUMES",
  "CLONE_VOLUME",
  "EXPAND_VOLUME",
  "GET_CAPACITY",
  "GET_VOLUME",
  "VOLUME_CONDITION",
  // ControllerModifyVolume with mutable_parameters (the protection policy).
  "MODIFY_VOLUME",
  // We accept SINGLE_NODE_SINGLE_WRITER and SINGLE_NODE_MULTI_WRITER (CSI spec: advertise this
  // capability when supporting them).
  "SINGLE_NODE_MULTI_WRITER",
] as const;

/** GroupController capabilities (CSI spec, GroupControllerGetCapabilities). */
export const GROUP_CONTROLLER_CAPABILITIES = ["CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT"] as const;

/**
 * The Controller service: its RPCs wired to ControllerVolumes and ControllerSnapshots through the
 * one call wrapper. RPCs snapblock does not offer (publish/unpublish: volumes are node-local and
 * need no attach step) answer UNIMPLEMENTED, as the CSI spec asks
 * of RPCs whose capability is not advertised.
 */
export function controllerHandlers(options: ControllerOptions): ControllerServices {
  const locks = new OperationLocks();
  const groups = new ControllerGroupSnapshots({
    engine: options.engine,
    locks,
    logger: options.logger,
    ...(options.groupHoldMs !== undefined ? { holdMs: options.groupHoldMs } : {}),
  });
  const volumes = new ControllerVolumes({ engine: options.engine, locks });
  const snapshots = new ControllerSnapshots({ engine: options.engine, locks });
  const log = { logger: options.logger, observer: options.observer };
  const unimplemented = (method: string, why: string) =>
    unary(method, log, () =>
      Promise.reject(new StatusError("UNIMPLEMENTED", `${method} is not supported by snapblock: ${why}`)),
    );
  const controller: UntypedServiceImplementation = {
    CreateVolume: unary("CreateVolume", log, volumes.createVolume.bind(volumes)),
    DeleteVolume: unary("DeleteVolume", log, volumes.deleteVolume.bind(volumes)),
    ValidateVolumeCapabilities: unary(
      "ValidateVolumeCapabilities",
      log,
      volumes.validateVolumeCapabilities.bind(volumes),
    ),
    ListVolumes: unary("ListVolumes", { ...log, quiet: true }, volumes.listVolumes.bind(volumes)),
    GetCapacity: unary("GetCapacity", { ...log, quiet: true }, volumes.getCapacity.bind(volumes)),
    ControllerExpandVolume: unary(
      "ControllerExpandVolume",
      log,
      volumes.controllerExpandVolume.bind(volumes),
    ),
    ControllerGetVolume: unary(
      "ControllerGetVolume",
      { ...log, quiet: true },
      volumes.controllerGetVolume.bind(volumes),
    ),
    CreateSnapshot: unary("CreateSnapshot", log, snapshots.createSnapshot.bind(snapshots)),
    DeleteSnapshot: unary("DeleteSnapshot", log, snapshots.deleteSnapshot.bind(snapshots)),
    ListSnapshots: unary("ListSnapshots", { ...log, quiet: true }, snapshots.listSnapshots.bind(snapshots)),
    GetSnapshot: unary("GetSnapshot", { ...log, quiet: true }, snapshots.getSnapshot.bind(snapshots)),
    ControllerGetCapabilities: unary(
      "ControllerGetCapabilities",
      { ...log, quiet: true },
      (): Promise<ControllerGetCapabilitiesResponse> =>
        Promise.resolve({
          capabilities: CONTROLLER_CAPABILITIES.map((type): ControllerServiceCapability => ({
            rpc: { type },
          })),
        }),
    ),
    ControllerPublishVolume: unimplemented(
      "ControllerPublishVolume",
      "volumes are node-local and need no attach step",
    ),
    ControllerUnpublishVolume: unimplemented(
      "ControllerUnpublishVolume",
      "volumes are node-local and need no attach step",
    ),
    ControllerModifyVolume: unary(
      "ControllerModifyVolume",
      log,
      volumes.controllerModifyVolume.bind(volumes),
    ),
  };
  // The GroupController service (CSI v1.12, GA): group snapshots (docs/csi.md, "Group snapshots").
  const groupController: UntypedServiceImplementation = {
    GroupControllerGetCapabilities: unary(
      "GroupControllerGetCapabilities",
      { ...log, quiet: true },
      (): Promise<GroupControllerGetCapabilitiesResponse> =>
        Promise.resolve({
          capabilities: GROUP_CONTROLLER_CAPABILITIES.map((type) => ({ rpc: { type } })),
        }),
    ),
    CreateVolumeGroupSnapshot: unary(
      "CreateVolumeGroupSnapshot",
      log,
      groups.createVolumeGroupSnapshot.bind(groups),
    ),
    DeleteVolumeGroupSnapshot: unary(
      "DeleteVolumeGroupSnapshot",
      log,
      groups.deleteVolumeGroupSnapshot.bind(groups),
    ),
    GetVolumeGroupSnapshot: unary(
      "GetVolumeGroupSnapshot",
      { ...log, quiet: true },
      groups.getVolumeGroupSnapshot.bind(groups),
    ),
  };
  return { controller, groupController };
}
