import type {
  EngineCapacity,
  EngineCopyProgress,
  EngineDeviceKind,
  EngineHolder,
  EnginePullProgress,
  EngineSnapshot,
  EngineSnapshotLimits,
  EngineSpace,
  EngineVolume,
} from "../engine-api/index.js";

/**
 * The messages of proto/engine.proto as grpc-js hands them over with the loader options of
 * engine-proto.ts (hand-written: a dozen small messages do not justify a generator step), and the
 * conversions between them and the EngineApi's data. Unset message fields arrive as null, maps as
 * {}, int64 as numbers, enums as their names.
 */
export type WireDeviceKind = "DEVICE_KIND_UNSPECIFIED" | "VOLUME" | "SNAPSHOT";

export interface WireSource {
  kind: WireDeviceKind;
  name: string;
  nodeId: string;
  holders: WireHolder[];
}

export interface WireHolder {
  nodeId: string;
  address: string;
  name: string;
}

export interface WirePullProgress {
  origin: string;
  pendingChunks: number;
  totalChunks: number;
  state: string;
  bytes: number;
  rate: number;
  error: string;
}

export interface WireCopyProgress {
  state: string;
  copiedChunks: number;
  totalChunks: number;
  error: string;
}

export interface WireVolume {
  name: string;
  id: number;
  sizeBytes: number;
  createdAtMs: number;
  source: WireSource | null;
  copy: WireCopyProgress | null;
  meta: Record<string, string>;
  pull: WirePullProgress | null;
  /** "" when off (proto3 strings have no absence). */
  protection: string;
  /** "" when the block device is fine or not attached. */
  attachmentProblem: string;
}

export interface WireSnapshot {
  name: string;
  id: number;
  sizeBytes: number;
  createdAtMs: number;
  sourceVolume: string;
  meta: Record<string, string>;
  pull: WirePullProgress | null;
  pinned: boolean;
}

export interface WireCreateVolumeRequest {
  name: string;
  sizeBytes: number;
  meta: Record<string, string>;
  source: WireSource | null;
  fullCopy: boolean;
  protection: string;
}

export interface WireSetProtectionRequest {
  name: string;
  policy: string;
}

export interface WireNameRequest {
  name: string;
}

export interface WirePinPointRequest {
  name: string;
  pinned: boolean;
}

export interface WireGetVolumeResponse {
  found: boolean;
  volume: WireVolume | null;
}

export interface WireListVolumesResponse {
  volumes: WireVolume[];
  idWatermark: number;
}

export interface WireResizeVolumeRequest {
  name: string;
  sizeBytes: number;
}

export interface WireCreateSnapshotRequest {
  volume: string;
  name: string;
  meta: Record<string, string>;
  skipFilesystemFreeze: boolean;
  limits: WireSnapshotLimits | null;
}

export interface WireGroupMember {
  volume: string;
  name: string;
  meta: Record<string, string>;
}

export interface WireCreateSnapshotGroupRequest {
  members: WireGroupMember[];
  holdId: string;
}

export interface WireCreateSnapshotGroupResponse {
  snapshots: WireSnapshot[];
}

export interface WireHoldWritesRequest {
  volumes: string[];
  timeoutMs: number;
}

export interface WireGroupRecordRequest {
  name: string;
  record: Record<string, string>;
}

export interface WireGetGroupRecordResponse {
  found: boolean;
  record: Record<string, string>;
}

export interface WireSnapshotLimits {
  maxSnapshots: number;
  maxSnapshotBytes: number;
  maxSnapshotsName: string;
  maxSnapshotBytesName: string;
}

/** The Space message is the EngineSpace as it is: the same fields, camelCase, numbers. */
export type WireSpace = EngineSpace;

export interface WireNodeSpace {
  nodeId: string;
  space: WireSpace | null;
  error: string;
}

export interface WireClusterSpace {
  nodes: WireNodeSpace[];
}

export interface WireGetSnapshotResponse {
  found: boolean;
  snapshot: WireSnapshot | null;
}

export interface WireListSnapshotsResponse {
  snapshots: WireSnapshot[];
  idWatermark: number;
}

export type WireCapacity = EngineCapacity;

export interface WireNodeInfo {
  nodeId: string;
  ready: boolean;
  version: string;
}

export interface WireReadSnapshotChunksRequest {
  name: string;
  maxMessageBytes: number;
}

export interface WireSnapshotChunk {
  offset: number;
  data: Buffer;
  snapshotSizeBytes: number;
  chunkSize: number;
}

export interface WireReplicateSnapshotRequest {
  origin: string;
  sizeBytes: number;
  holders: WireHolder[];
  baseOrigin: string;
  meta: Record<string, string>;
}

export interface WireSetHoldersRequest {
  origin: string;
  holders: WireHolder[];
}

export interface WireGrantPullRequest {
  name: string;
  nodeId: string;
}

export interface WireTombstones {
  tombstones: { origin: string; id: number; deletedAtMs: number }[];
}

export interface WireListBlockMetadataRequest {
  name: string;
  baseName: string;
  startingOffset: number;
  maxResults: number;
}

export interface WireBlockMetadataPage {
  sizeBytes: number;
  ranges: { offset: number; length: number }[];
}

export interface WireListChunksRequest {
  name: string;
  chunkSize: number;
  baseName: string;
}

export interface WireChunkRuns {
  sizeBytes: number;
  incremental: boolean;
  firsts: number[];
  counts: number[];
}

export interface WireReadChunksRequest {
  name: string;
  chunkSize: number;
  chunks: number[];
}

export interface WireChunkData {
  chunk: number;
  data: Buffer;
  hole: boolean;
}

const PULL_STATES: ReadonlySet<string> = new Set(["running", "stalled", "done", "stopped"]);

export function toWireHolder(h: EngineHolder): WireHolder {
  return { nodeId: h.nodeId, address: h.address, name: h.name };
}

export function fromWireHolder(w: WireHolder): EngineHolder {
  return { nodeId: w.nodeId, address: w.address, name: w.name };
}

function toWirePull(p: EnginePullProgress | undefined): WirePullProgress | null {
  return p ? { ...p, error: p.error ?? "" } : null;
}

function fromWirePull(w: WirePullProgress | null): EnginePullProgress | undefined {
  if (!w) return undefined;
  return {
    origin: w.origin,
    pendingChunks: w.pendingChunks,
    totalChunks: w.totalChunks,
    // An unknown state from a newer peer reads as running: the caller looks again.
    state: PULL_STATES.has(w.state) ? (w.state as EnginePullProgress["state"]) : "running",
    bytes: w.bytes,
    rate: w.rate,
    ...(w.error ? { error: w.error } : {}),
  };
}

const COPY_STATES: ReadonlySet<string> = new Set(["running", "done", "cancelled", "failed"]);

export function toWireKind(kind: EngineDeviceKind): WireDeviceKind {
  return kind === "volume" ? "VOLUME" : "SNAPSHOT";
}

/** undefined for DEVICE_KIND_UNSPECIFIED (a peer that set no kind). */
export function fromWireKind(kind: WireDeviceKind): EngineDeviceKind | undefined {
  if (kind === "VOLUME") return "volume";
  if (kind === "SNAPSHOT") return "snapshot";
  return undefined;
}

export function toWireVolume(v: EngineVolume): WireVolume {
  return {
    name: v.name,
    id: v.id,
    sizeBytes: v.sizeBytes,
    createdAtMs: v.createdAt.getTime(),
    source: v.source
      ? { kind: toWireKind(v.source.kind), name: v.source.name, nodeId: "", holders: [] }
      : null,
    copy: v.copy ? { ...v.copy, error: v.copy.error ?? "" } : null,
    meta: { ...v.meta },
    pull: toWirePull(v.pull),
    protection: v.protection ?? "",
    attachmentProblem: v.attachmentProblem ?? "",
  };
}

export function fromWireVolume(w: WireVolume): EngineVolume {
  const out: EngineVolume = {
    name: w.name,
    id: w.id,
    sizeBytes: w.sizeBytes,
    createdAt: new Date(w.createdAtMs),
    meta: { ...w.meta },
  };
  const kind = w.source ? fromWireKind(w.source.kind) : undefined;
  if (w.source && kind) out.source = { kind, name: w.source.name };
  if (w.copy) {
    const copy: EngineCopyProgress = {
      // An unknown state from a newer peer reads as running: the CO polls again.
      state: COPY_STATES.has(w.copy.state) ? (w.copy.state as EngineCopyProgress["state"]) : "running",
      copiedChunks: w.copy.copiedChunks,
      totalChunks: w.copy.totalChunks,
    };
    if (w.copy.error !== "") copy.error = w.copy.error;
    out.copy = copy;
  }
  const pull = fromWirePull(w.pull);
  if (pull) out.pull = pull;
  if (w.protection !== "") out.protection = w.protection;
  if (w.attachmentProblem !== "") out.attachmentProblem = w.attachmentProblem;
  return out;
}

export function toWireSnapshot(s: EngineSnapshot): WireSnapshot {
  return {
    name: s.name,
    id: s.id,
    sizeBytes: s.sizeBytes,
    createdAtMs: s.createdAt.getTime(),
    sourceVolume: s.sourceVolume,
    meta: { ...s.meta },
    pull: toWirePull(s.pull),
    pinned: s.pinned === true,
  };
}

export function fromWireSnapshot(w: WireSnapshot): EngineSnapshot {
  return {
    name: w.name,
    id: w.id,
    sizeBytes: w.sizeBytes,
    createdAt: new Date(w.createdAtMs),
    sourceVolume: w.sourceVolume,
    meta: { ...w.meta },
    ...(w.pull ? { pull: fromWirePull(w.pull)! } : {}),
    ...(w.pinned ? { pinned: true } : {}),
  };
}

export function toWireLimits(l: EngineSnapshotLimits | undefined): WireSnapshotLimits | null {
  if (!l) return null;
  return {
    maxSnapshots: l.maxSnapshots ?? 0,
    maxSnapshotBytes: l.maxSnapshotBytes ?? 0,
    maxSnapshotsName: l.names?.maxSnapshots ?? "",
    maxSnapshotBytesName: l.names?.maxSnapshotBytes ?? "",
  };
}

/** undefined when no limit is set (0 is "no limit" on the wire). */
export function fromWireLimits(w: WireSnapshotLimits | null): EngineSnapshotLimits | undefined {
  if (!w || (w.maxSnapshots <= 0 && w.maxSnapshotBytes <= 0)) return undefined;
  const out: EngineSnapshotLimits = {};
  const names: NonNullable<EngineSnapshotLimits["names"]> = {};
  if (w.maxSnapshots > 0) out.maxSnapshots = w.maxSnapshots;
  if (w.maxSnapshotBytes > 0) out.maxSnapshotBytes = w.maxSnapshotBytes;
  if (w.maxSnapshotsName !== "") names.maxSnapshots = w.maxSnapshotsName;
  if (w.maxSnapshotBytesName !== "") names.maxSnapshotBytes = w.maxSnapshotBytesName;
  if (names.maxSnapshots !== undefined || names.maxSnapshotBytes !== undefined) out.names = names;
  return out;
}

/** A Space as received: the pool message may be unset by a peer that sent nothing. */
export function fromWireSpace(w: WireSpace): EngineSpace {
  const pool = (w.pool as EngineSpace["pool"] | null) ?? {
    totalBytes: 0,
    allocatedBytes: 0,
    freeBytes: 0,
    provisionedBytes: 0,
    overcommitRatio: 1,
    reclaimableBytes: 0,
    copyReservedBytes: 0,
    sharedBytes: 0,
    chunkSize: 0,
  };
  return {
    pool: { ...pool },
    volumes: w.volumes.map((v) => ({ ...v })),
    snapshots: w.snapshots.map((s) => ({ ...s })),
  };
}
