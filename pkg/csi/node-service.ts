import type { UntypedServiceImplementation } from "@grpc/grpc-js";
import { SnapblockError, StatusError } from "../errors/index.js";
import { readCapacityRange } from "./capacity-range.js";
import { invalidArgument, notFound } from "./request-errors.js";
import type { NodeExpandVolumeRequest__Output } from "./generated/csi/v1/NodeExpandVolumeRequest.js";
import type { NodeExpandVolumeResponse } from "./generated/csi/v1/NodeExpandVolumeResponse.js";
import type { NodeGetCapabilitiesResponse } from "./generated/csi/v1/NodeGetCapabilitiesResponse.js";
import type { NodeGetInfoResponse } from "./generated/csi/v1/NodeGetInfoResponse.js";
import type { NodeGetVolumeStatsRequest__Output } from "./generated/csi/v1/NodeGetVolumeStatsRequest.js";
import type { NodeGetVolumeStatsResponse } from "./generated/csi/v1/NodeGetVolumeStatsResponse.js";
import type { NodePublishVolumeRequest__Output } from "./generated/csi/v1/NodePublishVolumeRequest.js";
import type { NodePublishVolumeResponse } from "./generated/csi/v1/NodePublishVolumeResponse.js";
import type { NodeStageVolumeRequest__Output } from "./generated/csi/v1/NodeStageVolumeRequest.js";
import type { NodeStageVolumeResponse } from "./generated/csi/v1/NodeStageVolumeResponse.js";
import type { NodeUnpublishVolumeRequest__Output } from "./generated/csi/v1/NodeUnpublishVolumeRequest.js";
import type { NodeUnpublishVolumeResponse } from "./generated/csi/v1/NodeUnpublishVolumeResponse.js";
import type { NodeUnstageVolumeRequest__Output } from "./generated/csi/v1/NodeUnstageVolumeRequest.js";
import type { NodeUnstageVolumeResponse } from "./generated/csi/v1/NodeUnstageVolumeResponse.js";
import { nodePathProblem, validateNodePath } from "./node-paths.js";
import type { NodeVolumeManager, NodeVolumeRef } from "./node-volume-manager.js";
import { OperationLocks, volumeLock } from "./operation-locks.js";
import { parseResourceId } from "./resource-id.js";
import { nodeTopology } from "./topology.js";
import { requireCapability } from "./volume-capabilities.js";
import { RAW_USE_META, checkAccessType, planStage } from "./volume-mode.js";
import { volumeFacts } from "./volume-view.js";
import type { Logger } from "../log/index.js";
import { unary, type CallScope, type CallObserver } from "../rpc/index.js";
import type { EngineApi, EngineMeta, EngineVolume } from "../engine-api/index.js";

/** The node's pool: EngineApi, and recording what the node learns about a volume's use. */
export interface NodeEngine extends EngineApi {
  updateVolumeMeta(name: string, patch: EngineMeta): Promise<EngineVolume>;
}

/**
 * What the Node service needs of the pool: a volume's size and metadata, and recording what the
 * node learns about its use. The pool in-process (LocalEngine), or the node's data plane process
 * when the node plugin runs apart from it.
 */
export interface NodeVolumeSource {
  readonly nodeId: string;
  getVolume(name: string): Promise<Pick<EngineVolume, "name" | "sizeBytes" | "meta"> | undefined>;
  updateVolumeMeta(name: string, patch: EngineMeta): Promise<unknown>;
}

export interface NodeOptions {
  /** The node's pool, in this process or behind the node's data plane. */
  engine: NodeVolumeSource;
  /** The data half: NBD export, kernel block device, filesystem and mounts. */
  volumes: NodeVolumeManager;
  /** NodeGetInfo.max_volumes_per_node (0: the CO decides). */
  maxVolumesPerNode?: number;
  /** When set, every path the CO gives must lie inside one of these directories. */
  pathRoots?: string[];
  logger: Logger;
  /** Metrics hooks, called for every RPC. */
  observer?: CallObserver;
}

export const NODE_CAPABILITIES = [
  "STAGE_UNSTAGE_VOLUME",
  "GET_VOLUME_STATS",
  "EXPAND_VOLUME",
  "VOLUME_CONDITION",
  "SINGLE_NODE_MULTI_WRITER",
] as const;

/**
 * The Node service: validation and locking here (validate -> lock -> delegate -> map), the data
 * work in the NodeVolumeManager. Locks are the node's own: a node call never waits for or aborts
 * because of a controller call (they are separate plugins in cluster mode).
 */
export class NodeService {
  private readonly locks = new OperationLocks();
  private readonly roots: string[];

  constructor(private readonly options: NodeOptions) {
    this.roots = options.pathRoots ?? [];
  }

  handlers(): UntypedServiceImplementation {
    const log = { logger: this.options.logger, observer: this.options.observer };
    const quiet = { ...log, quiet: true };
    return {
      NodeStageVolume: unary("NodeStageVolume", log, this.stage.bind(this)),
      NodeUnstageVolume: unary("NodeUnstageVolume", log, this.unstage.bind(this)),
      NodePublishVolume: unary("NodePublishVolume", log, this.publish.bind(this)),
      NodeUnpublishVolume: unary("NodeUnpublishVolume", log, this.unpublish.bind(this)),
      NodeGetVolumeStats: unary("NodeGetVolumeStats", quiet, this.stats.bind(this)),
      NodeExpandVolume: unary("NodeExpandVolume", log, this.expand.bind(this)),
      NodeGetCapabilities: unary("NodeGetCapabilities", quiet, (): Promise<NodeGetCapabilitiesResponse> =>
        Promise.resolve({ capabilities: NODE_CAPABILITIES.map((type) => ({ rpc: { type } })) }),
      ),
      NodeGetInfo: unary("NodeGetInfo", quiet, (): Promise<NodeGetInfoResponse> =>
        Promise.resolve({
          nodeId: this.options.engine.nodeId,
          maxVolumesPerNode: this.options.maxVolumesPerNode ?? 0,
          accessibleTopology: nodeTopology(this.options.engine.nodeId),
        }),
      ),
    };
  }

  async stage(req: NodeStageVolumeRequest__Output, scope: CallScope): Promise<NodeStageVolumeResponse> {
    const volumeId = this.requireVolumeId(req.volumeId, scope);
    const stagingPath = validateNodePath(req.stagingTargetPath, "staging_target_path", this.roots);
    const capability = requireCapability(req.volumeCapability, "volume_capability");
    const ref = this.ref(volumeId);
    return this.locked(ref, "NodeStageVolume", async () => {
      const volume = await this.existing(ref);
      const facts = volumeFacts(volume);
      const fsType = facts.fsType;
      const plan = planStage(facts, ref.volumeId, capability);
      if (capability.accessType === "mount" && capability.fsType !== "" && capability.fsType !== fsType) {
        // CSI spec, NodeStageVolume errors: "Volume published but is incompatible | 6 ALREADY_EXISTS"
        // covers a differing stage; a capability the volume cannot have is the CO's error.
        throw invalidArgument(
          `volume_capability asks for ${capability.fsType} but volume ${ref.volumeId} is ${fsType}`,
        );
      }
      // Recorded before the device exists, so that no raw write can precede the record.
      if (plan.markRawUse) await this.options.engine.updateVolumeMeta(ref.engineName, RAW_USE_META);
      await this.options.volumes.stage({
        ...ref,
        stagingPath,
        capability,
        fsType,
        ...(plan.refuseFormat === undefined ? {} : { refuseFormat: plan.refuseFormat }),
      });
      return {};
    });
  }

  async unstage(req: NodeUnstageVolumeRequest__Output, scope: CallScope): Promise<NodeUnstageVolumeResponse> {
    const volumeId = this.requireVolumeId(req.volumeId, scope);
    const stagingPath = validateNodePath(req.stagingTargetPath, "staging_target_path", this.roots);
    const ref = this.ref(volumeId);
    return this.locked(ref, "NodeUnstageVolume", async () => {
      await this.options.volumes.unstage({ ...ref, stagingPath });
      return {};
    });
  }

  async publish(req: NodePublishVolumeRequest__Output, scope: CallScope): Promise<NodePublishVolumeResponse> {
    const volumeId = this.requireVolumeId(req.volumeId, scope);
    const targetPath = validateNodePath(req.targetPath, "target_path", this.roots);
    const capability = requireCapability(req.volumeCapability, "volume_capability");
    if (req.stagingTargetPath === "") {
      // CSI spec, NodePublishVolume errors: "Staging target path not set | 9 FAILED_PRECONDITION".
      throw new StatusError(
        "FAILED_PRECONDITION",
        "staging_target_path is required: this plugin has STAGE_UNSTAGE_VOLUME; stage the volume first",
      );
    }
    const stagingPath = validateNodePath(req.stagingTargetPath, "staging_target_path", this.roots);
    if (stagingPath === targetPath) throw invalidArgument("target_path must differ from staging_target_path");
    const readOnly = req.readonly || capability.mode === "SINGLE_NODE_READER_ONLY";
    const ref = this.ref(volumeId);
    return this.locked(ref, "NodePublishVolume", async () => {
      checkAccessType(volumeFacts(await this.existing(ref)), ref.volumeId, capability, "published");
      await this.options.volumes.publish({ ...ref, stagingPath, targetPath, capability, readOnly });
      return {};
    });
  }

  async unpublish(
    req: NodeUnpublishVolumeRequest__Output,
    scope: CallScope,
  ): Promise<NodeUnpublishVolumeResponse> {
    const volumeId = this.requireVolumeId(req.volumeId, scope);
    const targetPath = validateNodePath(req.targetPath, "target_path", this.roots);
    const ref = this.ref(volumeId);
    return this.locked(ref, "NodeUnpublishVolume", async () => {
      await this.options.volumes.unpublish({ ...ref, targetPath });
      return {};
    });
  }

  async stats(req: NodeGetVolumeStatsRequest__Output, scope: CallScope): Promise<NodeGetVolumeStatsResponse> {
    const volumeId = this.requireVolumeId(req.volumeId, scope);
    // volume_path only names where to look: a path this plugin never publishes at (relative, not
    // normalized, outside the roots) is where the volume is not. CSI spec, NodeGetVolumeStats
    // errors: "Volume does not exist | 5 NOT_FOUND | ... does not exist on specified
    // volume_path". Only a missing or unreadable path is the CO's error.
    const pathProblem = nodePathProblem(req.volumePath, "volume_path", this.roots);
    if (pathProblem && pathProblem.kind !== "elsewhere") throw invalidArgument(pathProblem.message);
    if (req.stagingTargetPath !== "")
      validateNodePath(req.stagingTargetPath, "staging_target_path", this.roots);
    const ref = this.ref(volumeId);
    if (pathProblem) {
      throw new SnapblockError(
        "NOT_FOUND",
        `volume ${volumeId} is not at volume_path: ${pathProblem.message}`,
      );
    }
    const volumePath = req.volumePath;
    return this.locked(
      ref,
      "NodeGetVolumeStats",
      async () => {
        await this.existing(ref);
        const stats = await this.options.volumes.stats({ ...ref, volumePath });
        return { usage: stats.usage, volumeCondition: stats.condition };
      },
      "shared",
    );
  }

  async expand(req: NodeExpandVolumeRequest__Output, scope: CallScope): Promise<NodeExpandVolumeResponse> {
    const volumeId = this.requireVolumeId(req.volumeId, scope);
    const volumePath = validateNodePath(req.volumePath, "volume_path", this.roots);
    const stagingPath =
      req.stagingTargetPath === ""
        ? undefined
        : validateNodePath(req.stagingTargetPath, "staging_target_path", this.roots);
    const range = readCapacityRange(req.capacityRange, "capacity_range");
    const capability = req.volumeCapability
      ? requireCapability(req.volumeCapability, "volume_capability")
      : undefined;
    const ref = this.ref(volumeId);
    return this.locked(ref, "NodeExpandVolume", async () => {
      const volume = await this.existing(ref);
      if (range && range.requiredBytes > volume.sizeBytes) {
        // CSI spec, NodeExpandVolume errors: "Unsupported capacity | 11 OUT_OF_RANGE": the
        // controller grows the volume first (ControllerExpandVolume).
        throw new SnapblockError(
          "OUT_OF_RANGE",
          `volume ${ref.volumeId} is ${volume.sizeBytes} bytes, less than required_bytes ${range.requiredBytes}: expand it with ControllerExpandVolume first`,
        );
      }
      if (range && range.limitBytes > 0 && range.limitBytes < volume.sizeBytes) {
        throw new SnapblockError(
          "OUT_OF_RANGE",
          `volume ${ref.volumeId} is ${volume.sizeBytes} bytes, more than limit_bytes ${range.limitBytes}`,
        );
      }
      return this.options.volumes.expand({
        ...ref,
        volumePath,
        sizeBytes: volume.sizeBytes,
        ...(stagingPath ? { stagingPath } : {}),
        ...(capability ? { capability } : {}),
      });
    });
  }

  /**
   * The first check of every volume call. Each handler checks all its required fields before it
   * asks whether the volume exists (ref): the CSI spec gives a request with a missing field
   * INVALID_ARGUMENT whatever its volume id, and csi-sanity checks exactly that with unknown ids.
   */
  private requireVolumeId(volumeId: string, scope: CallScope): string {
    if (volumeId === "") throw invalidArgument("volume_id is required");
    scope.note({ volumeId });
    return volumeId;
  }

  /** The volume an id names on this node; NOT_FOUND when it cannot be here. */
  private ref(volumeId: string): NodeVolumeRef {
    const parsed = parseResourceId(volumeId);
    if (!parsed || parsed.nodeId !== this.options.engine.nodeId) {
      // CSI spec, Node RPC errors: "Volume does not exist | 5 NOT_FOUND"; an id of another node
      // cannot exist here (the CO scheduled the pod against the volume's topology).
      throw notFound("volume", volumeId);
    }
    return { volumeId, engineName: parsed.engineName };
  }

  private async existing(ref: NodeVolumeRef): Promise<Pick<EngineVolume, "name" | "sizeBytes" | "meta">> {
    const volume = await this.options.engine.getVolume(ref.engineName);
    if (!volume) throw notFound("volume", ref.volumeId);
    return volume;
  }

  private locked<T>(
    ref: NodeVolumeRef,
    operation: string,
    fn: () => Promise<T>,
    mode: "exclusive" | "shared" = "exclusive",
  ): Promise<T> {
    return this.locks.with([volumeLock(ref.engineName, mode)], operation, fn);
  }
}
