/**
 * The messages of proto/operator.proto as grpc-js hands them over (pkg/rpc PROTO_LOADER_OPTIONS:
 * camelCase, defaults for absent fields), written by hand like the engine service's.
 */
export interface WireExport {
  uri: string;
  socketPath: string;
  exportName: string;
  readOnly: boolean;
}

export type VolumeStateName = "exported" | "attached" | "staged" | "published" | "broken";

export interface WireVolumeState {
  volumeId: string;
  state: VolumeStateName;
  reason: string;
  devicePath: string;
  mountPoints: string[];
  export: WireExport | null;
}

export interface WireGetInfoResponse {
  nodeId: string;
  attachDir: string;
}

export interface WireListVolumeStatesResponse {
  states: WireVolumeState[];
}

export interface WireDescribeSnapshotRequest {
  snapshotId: string;
}

export interface WireDescribeSnapshotResponse {
  dataMode: string;
}

export interface WireStartExportRequest {
  volumeId: string;
  snapshotId: string;
  readOnly: boolean;
}

export interface WireStopExportRequest {
  volumeId: string;
  snapshotId: string;
}

export interface WireStopExportResponse {
  stopped: boolean;
}

export interface WireSetPointPinnedRequest {
  snapshotId: string;
  pinned: boolean;
}

export interface WireSetPointPinnedResponse {
  pinned: boolean;
}

export interface WireListPinnedPointsRequest {
  volumeId: string;
}

export interface WireListPinnedPointsResponse {
  snapshotIds: string[];
}
