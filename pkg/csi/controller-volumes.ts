import { describeBytes as bytes } from "../byte-size/index.js";
import { SnapblockError, isSnapblockError } from "../errors/index.js";
import {
  chooseExpandedSize,
  chooseVolumeSize,
  readCapacityRange,
  sizeSatisfies,
  type CapacityRequest,
} from "./capacity-range.js";
import { invalidArgument, notFound } from "./request-errors.js";
import { engineNameFor, validateCsiName } from "./engine-names.js";
import type { ControllerExpandVolumeRequest__Output } from "./generated/csi/v1/ControllerExpandVolumeRequest.js";
import type { ControllerExpandVolumeResponse } from "./generated/csi/v1/ControllerExpandVolumeResponse.js";
import type { ControllerModifyVolumeRequest__Output } from "./generated/csi/v1/ControllerModifyVolumeRequest.js";
import type { ControllerModifyVolumeResponse } from "./generated/csi/v1/ControllerModifyVolumeResponse.js";
import type { ControllerGetVolumeRequest__Output } from "./generated/csi/v1/ControllerGetVolumeRequest.js";
import type { ControllerGetVolumeResponse } from "./generated/csi/v1/ControllerGetVolumeResponse.js";
import type { CreateVolumeRequest__Output } from "./generated/csi/v1/CreateVolumeRequest.js";
import type { CreateVolumeResponse } from "./generated/csi/v1/CreateVolumeResponse.js";
import type { DeleteVolumeRequest__Output } from "./generated/csi/v1/DeleteVolumeRequest.js";
import type { DeleteVolumeResponse } from "./generated/csi/v1/DeleteVolumeResponse.js";
import type { GetCapacityRequest__Output } from "./generated/csi/v1/GetCapacityRequest.js";
import type { GetCapacityResponse } from "./generated/csi/v1/GetCapacityResponse.js";
import type { ListVolumesRequest__Output } from "./generated/csi/v1/ListVolumesRequest.js";
import type { ListVolumesResponse } from "./generated/csi/v1/ListVolumesResponse.js";
import type { ValidateVolumeCapabilitiesRequest__Output } from "./generated/csi/v1/ValidateVolumeCapabilitiesRequest.js";
import type { ValidateVolumeCapabilitiesResponse } from "./generated/csi/v1/ValidateVolumeCapabilitiesResponse.js";
import type { VolumeContentSource__Output } from "./generated/csi/v1/VolumeContentSource.js";
import { snapshotLock, volumeLock, type LockClaim, type OperationLocks } from "./operation-locks.js";
import { compareCursors, decodePageToken, paginate, validateMaxEntries } from "./page-token.js";
import { PARAM_PROTECTION, parseMutableParameters } from "./protection-parameter.js";
import { parseResourceId } from "./resource-id.js";
import {
  PARAM_MAX_SNAPSHOTS,
  PARAM_MAX_SNAPSHOT_SPACE,
  parseVolumeParameters,
} from "./storage-class-parameters.js";
import { requirementNodes, topologyNode } from "./topology.js";
import {
  DEFAULT_FS_TYPE,
  checkCapability,
  requestedFsType,
  requireCapabilities,
  serializeCapabilities,
  type Capability,
} from "./volume-capabilities.js";
import { inheritFromSource, parseDataMode, volumeDataMode, type DataMode } from "./volume-mode.js";
import { META, volumeCondition, volumeContext, volumeFacts, volumeId, volumeMessage } from "./volume-view.js";
import type { CallScope } from "../rpc/index.js";
import type { EngineApi, EngineDeviceKind, EngineVolume } from "../engine-api/index.js";

export interface ControllerDeps {
  /** One node's engine (local mode) or the engine over every node (cluster mode). */
  engine: EngineApi;
  locks: OperationLocks;
}

/** An id resolved to the node engine holding it and the engine name there. */
export interface Located {
  engine: EngineApi;
  nodeId: string;
  engineName: string;
}

/**
 * The node engine and engine name an id denotes, or undefined when it cannot denote anything
 * here (malformed, or a node this controller does not serve).
 */
export function locate(engine: EngineApi, id: string): Located | undefined {
  const parsed = parseResourceId(id);
  const holder = parsed ? engine.engineFor(parsed.nodeId) : undefined;
  return parsed && holder
    ? { engine: holder, nodeId: parsed.nodeId, engineName: parsed.engineName }
    : undefined;
}

/** A content source resolved to the engine object it names. */
interface ResolvedSource extends Located {
  kind: EngineDeviceKind;
  engineName: string;
  /** As the CO gave it: kept with the volume and returned in Volume.content_source. */
  csiTag: string;
}

/**
 * The volume RPCs of the Controller service. Each reads: validate -> lock -> delegate -> map.
 */
export class ControllerVolumes {
  /**
   * Calls that take pool space (create, expand) check the room and use it one at a time, so two
   * of them cannot both pass the check for the last free bytes.
   */
  private provisioning: Promise<unknown> = Promise.resolve();

  constructor(private readonly deps: ControllerDeps) {}

  async createVolume(req: CreateVolumeRequest__Output, scope: CallScope): Promise<CreateVolumeResponse> {
    // validate
    const name = validateCsiName(req.name, "volume");
    const capabilities = requireCapabilities(req.volumeCapabilities, "volume_capabilities");
    const params = parseVolumeParameters(req.parameters);
    // CSI v1.12: mutable_parameters (a VolumeAttributesClass) win over the StorageClass's.
    const protection =
      parseMutableParameters(req.mutableParameters, "mutable_parameters").protection ?? params.protection;
    const range = readCapacityRange(req.capacityRange, "capacity_range");
    const capsFs = requestedFsType(capabilities, "volume_capabilities");
    if (capsFs && params.fsType && capsFs !== params.fsType) {
      throw invalidArgument(
        `parameters.fsType is ${params.fsType} but volume_capabilities ask for ${capsFs}: make them agree (or set only one)`,
      );
    }
    const askedFs = capsFs ?? params.fsType;
    const source = this.resolveSource(req.volumeContentSource);
    const nodes = requirementNodes(req.accessibilityRequirements);
    // Size errors (OUT_OF_RANGE) before any engine call; a restore's size comes from its source.
    const placementBytes = source ? 0 : chooseVolumeSize(range);
    const engineName = engineNameFor(name);
    scope.note({ name });
    const wanted: Record<string, string> = {
      [META.name]: name,
      // A restore or clone without a filesystem type takes its source's (decided below).
      [META.fsType]: askedFs ?? (source ? "" : DEFAULT_FS_TYPE),
      [META.fullCopy]: String(params.fullCopy),
      [META.capabilities]: serializeCapabilities(capabilities),
      [META.source]: source?.csiTag ?? "",
      ...(params.maxSnapshots !== undefined ? { [META.maxSnapshots]: String(params.maxSnapshots) } : {}),
      ...(params.maxSnapshotBytes !== undefined
        ? { [META.maxSnapshotBytes]: String(params.maxSnapshotBytes) }
        : {}),
      ...pvcMeta(req.parameters),
      ...(params.allowModeChange ? { [META.allowModeChange]: "true" } : {}),
    };
    // lock: the new volume exclusively, its source shared (it must not go away meanwhile)
    const claims: LockClaim[] = [volumeLock(engineName, "exclusive")];
    if (source)
      claims.push(
        source.kind === "snapshot"
          ? snapshotLock(source.engineName, "shared")
          : volumeLock(source.engineName, "shared"),
      );
    return this.deps.locks.with(claims, "CreateVolume", async () => {
      // delegate: placement answers the node of an earlier attempt, so a retry finds its volume
      const target = await this.deps.engine.placeVolume({
        name: engineName,
        sizeBytes: placementBytes,
        ...(nodes.requisite ? { requisite: nodes.requisite } : {}),
        preferred: nodes.preferred,
        ...(source ? { sourceNodeId: source.nodeId } : {}),
        parameters: req.parameters,
      });
      scope.note({ volumeId: volumeId(target.nodeId, { name: engineName }) });
      const existing = await target.getVolume(engineName);
      if (existing) {
        // CSI spec, CreateVolume: a repeated call with the same name returns the same volume, or
        // ALREADY_EXISTS when it "is incompatible with the specified capacity_range,
        // volume_capabilities, parameters, accessibility_requirements or volume_content_source".
        this.ensureCompatible(existing, wanted, range);
        // An earlier attempt that made the volume but failed before setting its policy: set it
        // now. A volume with a policy keeps it (it may have been modified since).
        if (protection !== undefined && protection !== "off" && existing.protection === undefined)
          await target.setProtection(engineName, protection);
        return { volume: volumeMessage(target.nodeId, existing) };
      }
      const origin = source ? await this.describeSource(source) : undefined;
      if (source && origin) {
        wanted[META.fsType] =
          inheritFromSource({
            source: `${source.kind} ${source.csiTag.slice(source.kind.length + 1)}`,
            mode: origin.mode,
            capabilities,
            requestedFsType: askedFs,
            allowModeChange: params.allowModeChange,
          }) ?? DEFAULT_FS_TYPE;
      }
      const sizeBytes = chooseVolumeSize(range, origin?.sizeBytes);
      const created = await this.withRoom(target, sizeBytes, () =>
        target.createVolume({
          name: engineName,
          sizeBytes,
          meta: wanted,
          ...(protection !== undefined && protection !== "off" ? { protection } : {}),
          ...(source
            ? {
                // The node holding the source: another node's snapshot is copied from there.
                source: { kind: source.kind, name: source.engineName, nodeId: source.nodeId },
                fullCopy: params.fullCopy,
              }
            : {}),
        }),
      );
      // map
      return { volume: volumeMessage(target.nodeId, created) };
    });
  }

  async deleteVolume(req: DeleteVolumeRequest__Output, scope: CallScope): Promise<DeleteVolumeResponse> {
    if (req.volumeId === "") throw invalidArgument("volume_id is required");
    scope.note({ volumeId: req.volumeId });
    const found = locate(this.deps.engine, req.volumeId);
    // CSI spec, DeleteVolume: "If a volume corresponding to the specified volume_id does not
    // exist or the artifacts associated with the volume do not exist anymore, the Plugin MUST
    // reply 0 OK." An id that cannot be ours names no volume.
    if (found === undefined) return {};
    const { engine, engineName } = found;
    return this.deps.locks.with([volumeLock(engineName, "exclusive")], "DeleteVolume", async () => {
      try {
        await engine.deleteVolume(engineName);
      } catch (err) {
        if (isSnapblockError(err, "NOT_FOUND")) return {};
        if (isSnapblockError(err, "BUSY")) {
          // CSI spec, DeleteVolume errors: "Volume in use | 9 FAILED_PRECONDITION".
          throw new SnapblockError(
            "BUSY",
            `volume ${req.volumeId} is in use (staged or published on the node); unpublish and unstage it first`,
            { cause: err },
          );
        }
        throw err;
      }
      return {};
    });
  }

  async validateVolumeCapabilities(
    req: ValidateVolumeCapabilitiesRequest__Output,
    scope: CallScope,
  ): Promise<ValidateVolumeCapabilitiesResponse> {
    if (req.volumeId === "") throw invalidArgument("volume_id is required");
    if (req.volumeCapabilities.length === 0) throw invalidArgument("volume_capabilities is required");
    scope.note({ volumeId: req.volumeId });
    const checks = req.volumeCapabilities.map((c, i) => checkCapability(c, `volume_capabilities[${i}]`));
    const params = parseVolumeParameters(req.parameters);
    const mutable = parseMutableParameters(req.mutableParameters, "mutable_parameters");
    const found = locate(this.deps.engine, req.volumeId);
    if (found === undefined) throw notFound("volume", req.volumeId);
    const { engine, engineName } = found;
    return this.deps.locks.with(
      [volumeLock(engineName, "shared")],
      "ValidateVolumeCapabilities",
      async () => {
        const volume = await engine.getVolume(engineName);
        if (!volume) throw notFound("volume", req.volumeId);
        const facts = volumeFacts(volume);
        const problems: string[] = [];
        checks.forEach((check, i) => {
          if (!check.ok) problems.push(`volume_capabilities[${i}]: ${check.reason}`);
          else if (
            check.capability.accessType === "mount" &&
            check.capability.fsType !== "" &&
            check.capability.fsType !== facts.fsType
          ) {
            problems.push(
              `volume_capabilities[${i}] asks for ${check.capability.fsType}, the volume is ${facts.fsType}`,
            );
          }
        });
        if (params.fsType && params.fsType !== facts.fsType)
          problems.push(`parameters.fsType is ${params.fsType}, the volume is ${facts.fsType}`);
        const context = volumeContext(volume);
        for (const [k, v] of Object.entries(req.volumeContext)) {
          if (context[k] !== v) problems.push(`volume_context["${k}"] does not match the volume's`);
        }
        if (mutable.protection !== undefined && mutable.protection !== (volume.protection ?? "off")) {
          problems.push(
            `mutable_parameters["${PARAM_PROTECTION}"] is "${mutable.protection}", the volume's policy is "${volume.protection ?? "off"}"`,
          );
        }
        if (problems.length > 0) return { message: problems.join("; ") };
        return {
          confirmed: {
            volumeContext: req.volumeContext,
            volumeCapabilities: req.volumeCapabilities,
            parameters: req.parameters,
            mutableParameters: req.mutableParameters,
          },
        };
      },
    );
  }

  async listVolumes(req: ListVolumesRequest__Output): Promise<ListVolumesResponse> {
    const maxEntries = validateMaxEntries(req.maxEntries);
    const listings = await Promise.all(
      this.deps.engine.nodeEngines().map(async (e) => ({ nodeId: e.nodeId, listing: await e.listVolumes() })),
    );
    const marks = new Map(listings.map((l) => [l.nodeId, l.listing.idWatermark]));
    const after = decodePageToken("volumes", req.startingToken, marks);
    const sorted = listings
      .flatMap((l) => l.listing.items.map((item) => ({ nodeId: l.nodeId, id: item.id, item })))
      .sort(compareCursors);
    const { page, nextToken } = paginate("volumes", sorted, after, maxEntries);
    return {
      entries: page.map(({ nodeId, item }) => ({
        volume: volumeMessage(nodeId, item),
        status: { volumeCondition: volumeCondition(item) },
      })),
      nextToken,
    };
  }

  async getCapacity(req: GetCapacityRequest__Output): Promise<GetCapacityResponse> {
    parseVolumeParameters(req.parameters);
    // CSI spec, GetCapacity: the capacity usable for volumes "that satisfy ALL of the specified
    // volume_capabilities" and in the given topology: none for what we cannot provision.
    const supported = req.volumeCapabilities.every(
      (c, i) => checkCapability(c, `volume_capabilities[${i}]`).ok,
    );
    // A segment naming a node answers for that node (CSIStorageCapacity per node); no segment
    // answers for every node together; a segment of other keys only names nothing we serve.
    const node = topologyNode(req.accessibleTopology);
    const engines =
      node === undefined
        ? this.deps.engine.nodeEngines()
        : node === null
          ? []
          : [this.deps.engine.engineFor(node)].filter((e): e is EngineApi => e !== undefined);
    if (!supported || engines.length === 0) {
      return { availableCapacity: 0, maximumVolumeSize: { value: 0 } };
    }
    // A node that cannot answer (down, unknown, pool still opening) has no capacity to offer
    // right now: 0 keeps the scheduler away from it (CSIStorageCapacity) instead of failing the
    // whole poll; calls about its volumes still answer UNAVAILABLE.
    const capacities = (
      await Promise.all(
        engines.map((e) =>
          e.capacity().catch((err: unknown) => {
            if (isSnapblockError(err, "CLOSED")) return undefined;
            throw err;
          }),
        ),
      )
    ).filter((c) => c !== undefined);
    if (capacities.length === 0) return { availableCapacity: 0, maximumVolumeSize: { value: 0 } };
    return {
      availableCapacity: capacities.reduce((sum, c) => sum + c.availableBytes, 0),
      maximumVolumeSize: {
        value: Math.max(...capacities.map((c) => Math.min(c.availableBytes, c.maxVolumeBytes))),
      },
    };
  }

  async controllerExpandVolume(
    req: ControllerExpandVolumeRequest__Output,
    scope: CallScope,
  ): Promise<ControllerExpandVolumeResponse> {
    if (req.volumeId === "") throw invalidArgument("volume_id is required");
    const range = readCapacityRange(req.capacityRange, "capacity_range");
    if (!range) throw invalidArgument("capacity_range is required");
    let capability: Capability | undefined;
    if (req.volumeCapability) {
      const check = checkCapability(req.volumeCapability, "volume_capability");
      if (!check.ok) throw invalidArgument(`volume_capability: ${check.reason}`);
      capability = check.capability;
    }
    scope.note({ volumeId: req.volumeId });
    const found = locate(this.deps.engine, req.volumeId);
    if (found === undefined) throw notFound("volume", req.volumeId);
    const { engine, engineName } = found;
    return this.deps.locks.with([volumeLock(engineName, "exclusive")], "ControllerExpandVolume", async () => {
      const volume = await engine.getVolume(engineName);
      if (!volume) throw notFound("volume", req.volumeId);
      const target = chooseExpandedSize(range, volume.sizeBytes);
      let current = volume;
      if (target > volume.sizeBytes) {
        current = await this.withRoom(engine, target - volume.sizeBytes, () =>
          engine.resizeVolume(engineName, target),
        );
      }
      // A filesystem must be grown on the node (NodeExpandVolume); a raw block device is its size.
      const mounted = capability
        ? capability.accessType === "mount"
        : volumeFacts(volume).capabilities.some((c) => c.accessType === "mount") ||
          volumeFacts(volume).capabilities.length === 0;
      return { capacityBytes: current.sizeBytes, nodeExpansionRequired: mounted };
    });
  }

  /**
   * ControllerModifyVolume (CSI v1.12, MODIFY_VOLUME): sets the volume's protection policy, the
   * one mutable parameter. Idempotent: the policy the volume has already changes nothing.
   */
  async controllerModifyVolume(
    req: ControllerModifyVolumeRequest__Output,
    scope: CallScope,
  ): Promise<ControllerModifyVolumeResponse> {
    // validate (CSI spec: volume_id and mutable_parameters are REQUIRED)
    if (req.volumeId === "") throw invalidArgument("volume_id is required");
    const { protection } = parseMutableParameters(req.mutableParameters, "mutable_parameters");
    if (protection === undefined)
      throw invalidArgument(`mutable_parameters is required (accepted: ${PARAM_PROTECTION})`);
    scope.note({ volumeId: req.volumeId });
    const found = locate(this.deps.engine, req.volumeId);
    if (found === undefined) throw notFound("volume", req.volumeId);
    const { engine, engineName } = found;
    // lock -> delegate
    return this.deps.locks.with([volumeLock(engineName, "exclusive")], "ControllerModifyVolume", async () => {
      const volume = await engine.getVolume(engineName);
      if (!volume) throw notFound("volume", req.volumeId);
      if ((volume.protection ?? "off") !== protection) await engine.setProtection(engineName, protection);
      return {};
    });
  }

  async controllerGetVolume(
    req: ControllerGetVolumeRequest__Output,
    scope: CallScope,
  ): Promise<ControllerGetVolumeResponse> {
    if (req.volumeId === "") throw invalidArgument("volume_id is required");
    scope.note({ volumeId: req.volumeId });
    const found = locate(this.deps.engine, req.volumeId);
    if (found === undefined) throw notFound("volume", req.volumeId);
    const { engine, engineName, nodeId } = found;
    return this.deps.locks.with([volumeLock(engineName, "shared")], "ControllerGetVolume", async () => {
      const volume = await engine.getVolume(engineName);
      if (!volume) throw notFound("volume", req.volumeId);
      return {
        volume: volumeMessage(nodeId, volume),
        status: { volumeCondition: volumeCondition(volume) },
      };
    });
  }

  private resolveSource(src: VolumeContentSource__Output | null): ResolvedSource | undefined {
    if (!src || src.type === undefined) return undefined;
    if (src.type === "snapshot") {
      const id = src.snapshot?.snapshotId ?? "";
      if (id === "") throw invalidArgument("volume_content_source.snapshot.snapshot_id is required");
      const found = locate(this.deps.engine, id);
      // CSI spec, CreateVolume errors: "Source does not exist | 5 NOT_FOUND".
      if (found === undefined) throw notFound("snapshot", id, "volume_content_source");
      return { ...found, kind: "snapshot", csiTag: `snapshot:${id}` };
    }
    const id = src.volume?.volumeId ?? "";
    if (id === "") throw invalidArgument("volume_content_source.volume.volume_id is required");
    const found = locate(this.deps.engine, id);
    if (found === undefined) throw notFound("volume", id, "volume_content_source");
    return { ...found, kind: "volume", csiTag: `volume:${id}` };
  }

  /** The source's size, and what its data is (volume-mode.ts): for a snapshot, as it was taken. */
  private async describeSource(source: ResolvedSource): Promise<{ sizeBytes: number; mode?: DataMode }> {
    const missing = () =>
      notFound(source.kind, source.csiTag.slice(source.kind.length + 1), "volume_content_source");
    if (source.kind === "volume") {
      const volume = await source.engine.getVolume(source.engineName);
      if (!volume) throw missing();
      return { sizeBytes: volume.sizeBytes, ...optional(volumeDataMode(volumeFacts(volume))) };
    }
    const snapshot = await source.engine.getSnapshot(source.engineName);
    if (!snapshot) throw missing();
    let mode = parseDataMode(snapshot.meta[META.dataMode]);
    if (!mode) {
      // A snapshot taken before snapshots recorded it: its volume's mode now, if it still exists.
      const volume = await source.engine.getVolume(snapshot.sourceVolume);
      mode = volume ? volumeDataMode(volumeFacts(volume)) : undefined;
    }
    return { sizeBytes: snapshot.sizeBytes, ...optional(mode) };
  }

  /**
   * Thin provisioning guard: RESOURCE_EXHAUSTED (CSI spec, CreateVolume: out of capacity) when
   * the pool cannot take extraBytes more; otherwise runs use() before any other such call.
   */
  private withRoom<T>(engine: EngineApi, extraBytes: number, use: () => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      const capacity = await engine.capacity();
      if (extraBytes > capacity.availableBytes) {
        throw new SnapblockError(
          "NO_SPACE",
          `the pool on node ${engine.nodeId} can provision ${bytes(capacity.availableBytes)} more (pool ${bytes(capacity.totalBytes)}, ${bytes(capacity.provisionedBytes)} provisioned), not ${bytes(extraBytes)}`,
        );
      }
      return use();
    };
    const result = this.provisioning.then(run, run);
    this.provisioning = result.catch(() => undefined);
    return result;
  }

  private ensureCompatible(
    existing: EngineVolume,
    wanted: Record<string, string>,
    range: CapacityRequest | undefined,
  ): void {
    const differs: string[] = [];
    const have = existing.meta;
    if (have[META.name] !== undefined && have[META.name] !== wanted[META.name])
      differs.push("name (hash collision of engine names)");
    if (!sizeSatisfies(existing.sizeBytes, range))
      differs.push(`capacity_range (the volume has ${bytes(existing.sizeBytes)})`);
    if ((have[META.source] ?? "") !== wanted[META.source]) differs.push("volume_content_source");
    // "": a restore or clone that names no filesystem type accepts the one it inherited.
    if (wanted[META.fsType] !== "" && (have[META.fsType] ?? DEFAULT_FS_TYPE) !== wanted[META.fsType])
      differs.push("filesystem type");
    if ((have[META.fullCopy] ?? "false") !== wanted[META.fullCopy])
      differs.push(`parameters["snapblock.dev/fullCopy"]`);
    if ((have[META.allowModeChange] ?? "false") !== (wanted[META.allowModeChange] ?? "false"))
      differs.push(`parameters["snapblock.dev/allowModeChange"]`);
    if (have[META.capabilities] !== undefined && have[META.capabilities] !== wanted[META.capabilities])
      differs.push("volume_capabilities");
    for (const [key, param] of [
      [META.maxSnapshots, PARAM_MAX_SNAPSHOTS],
      [META.maxSnapshotBytes, PARAM_MAX_SNAPSHOT_SPACE],
    ] as const) {
      if ((have[key] ?? "") !== (wanted[key] ?? "")) differs.push(`parameters["${param}"]`);
    }
    if (differs.length > 0) {
      throw new SnapblockError(
        "ALREADY_EXISTS",
        `a volume named ${JSON.stringify(wanted[META.name])} already exists with a different ${differs.join(", ")}; use another name or the same request`,
      );
    }
  }
}

/** The PVC a CreateVolume is for, kept with the volume (the provisioner's --extra-create-metadata). */
function pvcMeta(parameters: Record<string, string>): Record<string, string> {
  const name = parameters["csi.storage.k8s.io/pvc/name"];
  const namespace = parameters["csi.storage.k8s.io/pvc/namespace"];
  return name && namespace ? { [META.pvcName]: name, [META.pvcNamespace]: namespace } : {};
}

/** { mode } when there is one (exactOptionalPropertyTypes: no key rather than undefined). */
function optional(mode: DataMode | undefined): { mode?: DataMode } {
  return mode ? { mode } : {};
}
