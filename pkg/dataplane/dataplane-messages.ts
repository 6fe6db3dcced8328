/**
 * The messages of proto/dataplane.proto as grpc-js hands them over (pkg/rpc PROTO_LOADER_OPTIONS:
 * camelCase, defaults for absent fields), written by hand like the engine service's, and their
 * conversions to and from pkg/attach and pkg/node types. The wire has no absence: an empty string
 * or 0 stands for an absent optional field.
 */
import type { Attachment, AttacherKind } from "../attach/index.js";
import { SnapblockError } from "../errors/index.js";
import type { DataPlaneInfo, VolumeAttachmentFacts } from "../node/index.js";

export interface WireGetInfoResponse {
  nodeId: string;
  attacherKind: string;
  onlineResize: boolean;
  ready: boolean;
  reason: string;
}

export interface WireGetVolumeResponse {
  found: boolean;
  name: string;
  sizeBytes: number;
  meta: Record<string, string>;
}

export interface WireAttachment {
  key: string;
  kind: string;
  devicePath: string;
  socketPath: string;
  exportName: string;
  readOnly: boolean;
  sizeBytes: number;
  health: string;
  problems: string[];
  attachedAt: string;
  pid: number;
}

export interface WireFindAttachmentResponse {
  found: boolean;
  attachment: WireAttachment | null;
}

export interface WireAttachmentFacts {
  engineName: string;
  health: string;
  problems: string[];
  devicePath: string;
  filesystemMounts: string[];
  deviceBindMounts: string[];
}

export interface WireListAttachmentsResponse {
  attachments: WireAttachmentFacts[];
}

export interface WireEngineNameRequest {
  engineName: string;
}

export interface WireAttachRequest extends WireEngineNameRequest {
  label: string;
}

export interface WireFindAttachmentRequest extends WireEngineNameRequest {
  probeIo: boolean;
}

export interface WireUpdateVolumeMetaRequest extends WireEngineNameRequest {
  meta: Record<string, string>;
}

export function toWireInfo(info: DataPlaneInfo): WireGetInfoResponse {
  return { ...info, attacherKind: info.attacherKind ?? "" };
}

export function fromWireInfo(w: WireGetInfoResponse): DataPlaneInfo {
  return {
    nodeId: w.nodeId,
    attacherKind: w.attacherKind === "" ? undefined : attacherKind(w.attacherKind),
    onlineResize: w.onlineResize,
    ready: w.ready,
    reason: w.reason,
  };
}

export function toWireAttachment(a: Attachment): WireAttachment {
  return {
    key: a.key,
    kind: a.kind,
    devicePath: a.devicePath ?? "",
    socketPath: a.socketPath,
    exportName: a.exportName,
    readOnly: a.readOnly,
    sizeBytes: a.sizeBytes,
    health: a.health,
    problems: a.problems,
    attachedAt: a.attachedAt,
    pid: a.pid ?? 0,
  };
}

export function fromWireAttachment(w: WireAttachment): Attachment {
  return {
    key: w.key,
    kind: attacherKind(w.kind),
    ...(w.devicePath === "" ? {} : { devicePath: w.devicePath }),
    socketPath: w.socketPath,
    exportName: w.exportName,
    readOnly: w.readOnly,
    sizeBytes: w.sizeBytes,
    health: health(w.health),
    problems: w.problems,
    attachedAt: w.attachedAt,
    ...(w.pid === 0 ? {} : { pid: w.pid }),
  };
}

export function toWireFacts(f: VolumeAttachmentFacts): WireAttachmentFacts {
  return { ...f, devicePath: f.devicePath ?? "" };
}

export function fromWireFacts(w: WireAttachmentFacts): VolumeAttachmentFacts {
  return {
    engineName: w.engineName,
    health: health(w.health),
    problems: w.problems,
    ...(w.devicePath === "" ? {} : { devicePath: w.devicePath }),
    filesystemMounts: w.filesystemMounts,
    deviceBindMounts: w.deviceBindMounts,
  };
}

function attacherKind(kind: string): AttacherKind {
  if (kind === "nbd-client" || kind === "nbdfuse-loop") return kind;
  throw new SnapblockError(
    "INTERNAL",
    `the data plane names an unknown attacher kind ${JSON.stringify(kind)}`,
  );
}

function health(h: string): "ok" | "broken" {
  if (h === "ok" || h === "broken") return h;
  throw new SnapblockError("INTERNAL", `the data plane names an unknown health ${JSON.stringify(h)}`);
}
