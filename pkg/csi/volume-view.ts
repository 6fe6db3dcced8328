import type { Snapshot } from "./generated/csi/v1/Snapshot.js";
import type { Volume } from "./generated/csi/v1/Volume.js";
import type { VolumeCondition } from "./generated/csi/v1/VolumeCondition.js";
import { formatResourceId } from "./resource-id.js";
import { nodeTopology } from "./topology.js";
import { DEFAULT_FS_TYPE, parseCapabilities, type Capability, type FsType } from "./volume-capabilities.js";
import { PVC_META, type EngineSnapshot, type EngineVolume } from "../engine-api/index.js";

/**
 * How the CSI layer keeps its view of a volume or snapshot in the engine's metadata
 * (EngineApi meta), and how it turns engine objects into CSI messages.
 */
export const META = {
  /** The CSI name given at creation (CreateVolumeRequest.name / CreateSnapshotRequest.name). */
  name: "csi.name",
  /** Filesystem made on first stage: ext4 or xfs. */
  fsType: "csi.fsType",
  /** "true" when the volume was asked for as a full, independent copy of its source. */
  fullCopy: "csi.fullCopy",
  /** The capabilities of CreateVolume, normalized (volume-capabilities.ts). */
  capabilities: "csi.capabilities",
  /** "snapshot:<id>" or "volume:<id>": the CSI content source, as the CO named it. */
  source: "csi.source",
  /** Snapshot: the CSI id of its source volume. */
  sourceVolumeId: "csi.sourceVolumeId",
  /** The StorageClass's snapshot limits (decimal numbers; absent: none). */
  maxSnapshots: "csi.maxSnapshots",
  maxSnapshotBytes: "csi.maxSnapshotBytes",
  /**
   * The PVC the volume was made for (the provisioner's --extra-create-metadata), so that Events
   * about the volume (its pool filling up) can be raised on it.
   */
  pvcName: PVC_META.name,
  pvcNamespace: PVC_META.namespace,
  /** "true": the volume may be used in another mode than its own or its source's (volume-mode.ts). */
  allowModeChange: "csi.allowModeChange",
  /** "true" once the volume was staged as a raw block device or exported read-write over NBD. */
  rawUse: "csi.rawUse",
  /** Snapshot: what its source volume held when it was taken ("block", "filesystem:ext4", ...). */
  dataMode: "csi.dataMode",
  /** Snapshot: the id of the group snapshot it was taken in (absent: taken alone). */
  groupSnapshotId: "csi.groupSnapshotId",
} as const;

/** volume_context key: the filesystem, so the node knows what to make without asking. */
export const CONTEXT_FS_TYPE = "snapblock.dev/fsType";
/** volume_context key: "block", "filesystem", or "block,filesystem" (the access types it was made for). */
export const CONTEXT_VOLUME_MODE = "snapblock.dev/volumeMode";

export interface VolumeFacts {
  csiName: string;
  /** The filesystem of mount access (meaningful only when accessTypes includes "mount"). */
  fsType: FsType;
  fullCopy: boolean;
  capabilities: Capability[];
  /**
   * The access types the volume was created for. Volumes made before capabilities were recorded
   * count as mount volumes, as they were then.
   */
  accessTypes: ReadonlySet<"block" | "mount">;
  source: string;
  /** The snapshot limits kept with the volume (undefined: none). */
  maxSnapshots?: number;
  maxSnapshotBytes?: number;
  allowModeChange: boolean;
  rawUse: boolean;
}

export function volumeFacts(v: Pick<EngineVolume, "name" | "meta">): VolumeFacts {
  const fs = v.meta[META.fsType];
  const capabilities = parseCapabilities(v.meta[META.capabilities]);
  const facts: VolumeFacts = {
    csiName: v.meta[META.name] ?? v.name,
    fsType: fs === "xfs" || fs === "ext4" ? fs : DEFAULT_FS_TYPE,
    fullCopy: v.meta[META.fullCopy] === "true",
    capabilities,
    accessTypes: new Set(capabilities.length === 0 ? ["mount"] : capabilities.map((c) => c.accessType)),
    source: v.meta[META.source] ?? "",
    allowModeChange: v.meta[META.allowModeChange] === "true",
    rawUse: v.meta[META.rawUse] === "true",
  };
  const count = Number(v.meta[META.maxSnapshots] ?? "");
  const bytes = Number(v.meta[META.maxSnapshotBytes] ?? "");
  if (Number.isSafeInteger(count) && count > 0) facts.maxSnapshots = count;
  if (Number.isSafeInteger(bytes) && bytes > 0) facts.maxSnapshotBytes = bytes;
  return facts;
}

export function volumeId(nodeId: string, v: { name: string }): string {
  return formatResourceId({ nodeId, engineName: v.name });
}

/**
 * The immutable context of a volume (CSI spec: the same for a volume_id, always): its mode, and
 * the filesystem only for a volume that can be mounted (a raw block volume has none).
 */
export function volumeContext(v: EngineVolume): Record<string, string> {
  const facts = volumeFacts(v);
  const modes = [
    ...(facts.accessTypes.has("block") ? ["block"] : []),
    ...(facts.accessTypes.has("mount") ? ["filesystem"] : []),
  ];
  return {
    [CONTEXT_VOLUME_MODE]: modes.join(","),
    ...(facts.accessTypes.has("mount") ? { [CONTEXT_FS_TYPE]: facts.fsType } : {}),
  };
}

export function volumeMessage(nodeId: string, v: EngineVolume): Volume {
  const message: Volume = {
    capacityBytes: v.sizeBytes,
    volumeId: volumeId(nodeId, v),
    volumeContext: volumeContext(v),
    accessibleTopology: [nodeTopology(nodeId)],
  };
  const source = volumeFacts(v).source;
  const colon = source.indexOf(":");
  if (colon > 0) {
    const kind = source.slice(0, colon);
    const id = source.slice(colon + 1);
    message.contentSource =
      kind === "snapshot" ? { snapshot: { snapshotId: id } } : { volume: { volumeId: id } };
  }
  return message;
}

/**
 * The volume's condition (VOLUME_CONDITION). Abnormal when a requested full copy failed: the
 * volume is still correct but still shares chunks with its source. The message of a running or
 * finished copy has a fixed form the operator CLI reads for its progress bar:
 * "full copy <state>: <copied>/<total> chunks (<percent>%)".
 */
export function volumeCondition(v: EngineVolume): VolumeCondition {
  if (v.attachmentProblem !== undefined) {
    return {
      abnormal: true,
      message: `its block device on its node is broken, I/O on it fails: ${v.attachmentProblem}; unpublish and unstage it, then stage and publish it again (Kubernetes: delete the pods using it) and the node plugin re-attaches it`,
    };
  }
  const pull = v.pull;
  if (pull) {
    const done = pull.totalChunks - pull.pendingChunks;
    const percent = pull.totalChunks === 0 ? 100 : Math.floor((done / pull.totalChunks) * 100);
    const progress = `restoring from snapshot ${pull.origin}: ${done}/${pull.totalChunks} chunks here (${percent}%)${pull.rate > 0 ? `, ${formatRate(pull.rate)}` : ""}`;
    if (pull.state === "stalled") {
      // Reads of what is not here yet fail until a holder answers: say so.
      return {
        abnormal: true,
        message: `${progress}; stalled: ${pull.error ?? "no holder of the snapshot answers"}; reads of the ${pull.pendingChunks} chunk(s) not yet copied fail until a node holding the snapshot is reachable`,
      };
    }
    return { abnormal: false, message: progress };
  }
  const copy = v.copy;
  if (!copy) return { abnormal: false, message: "volume is healthy" };
  const percent = copy.totalChunks === 0 ? 100 : Math.floor((copy.copiedChunks / copy.totalChunks) * 100);
  const progress = `full copy ${copy.state}: ${copy.copiedChunks}/${copy.totalChunks} chunks (${percent}%)`;
  if (copy.state === "failed") {
    return {
      abnormal: true,
      message: `${progress}; ${copy.error ?? "unknown error"}; the volume still shares data with its source`,
    };
  }
  return { abnormal: false, message: progress };
}

export function snapshotId(nodeId: string, s: { name: string }): string {
  return formatResourceId({ nodeId, engineName: s.name });
}

export function snapshotMessage(nodeId: string, s: EngineSnapshot): Snapshot {
  const ms = s.createdAt.getTime();
  return {
    sizeBytes: s.sizeBytes,
    snapshotId: snapshotId(nodeId, s),
    sourceVolumeId: s.meta[META.sourceVolumeId] ?? volumeId(nodeId, { name: s.sourceVolume }),
    creationTime: { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 },
    // Redirect-on-write: a snapshot shares the volume's chunks and is complete when it exists.
    readyToUse: true,
    // CSI spec, Snapshot.group_snapshot_id: set for the members of a group snapshot.
    ...(s.meta[META.groupSnapshotId] ? { groupSnapshotId: s.meta[META.groupSnapshotId] } : {}),
  };
}

function formatRate(bytesPerSecond: number): string {
  const mib = bytesPerSecond / 2 ** 20;
  return mib >= 1 ? `${mib.toFixed(1)} MiB/s` : `${Math.round(bytesPerSecond / 1024)} KiB/s`;
}
