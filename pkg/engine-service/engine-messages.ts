import type {
  EngineCapacity,
  EngineCopyProgress,
  EngineDeviceKind,
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
}

export interface WireSnapshot {
  name: string;
  id: number;
  sizeBytes: number;
  createdAtMs: number;
  sourceVolume: string;
  meta: Record<string, string>;
}

export interface WireCreateVolumeRequest {
  name: string;
  sizeBytes: number;
  meta: Record<string, string>;
  source: WireSource | null;
  fullCopy: boolean;
}

export interface WireNameRequest {
  name: string;
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
  limits: WireSnapshotLimits | null;
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
    source: v.source ? { kind: toWireKind(v.source.kind), name: v.source.name } : null,
    copy: v.copy ? { ...v.copy, error: v.copy.error ?? "" } : null,
    meta: { ...v.meta },
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
