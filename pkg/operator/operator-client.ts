import { credentials, type Client } from "@grpc/grpc-js";
import { callCsi, grpcUnixAddress } from "../csi/index.js";
import type {
  WireDescribeSnapshotResponse,
  WireExport,
  WireGetInfoResponse,
  WireListPinnedPointsResponse,
  WireListVolumeStatesResponse,
  WireSetPointPinnedResponse,
  WireStopExportResponse,
} from "./operator-messages.js";
import { loadOperatorProto } from "./operator-proto.js";

/**
 * A client of the operator service on a unix socket (the CLI). Calls reject with the grpc-js
 * ServiceError, like CSI calls do.
 */
export class OperatorClient {
  private readonly client: Client;

  constructor(socketPath: string) {
    const { Client: Ctor } = loadOperatorProto();
    this.client = new Ctor(grpcUnixAddress(socketPath), credentials.createInsecure());
  }

  getInfo(): Promise<WireGetInfoResponse> {
    return callCsi(this.client, "GetInfo", {});
  }

  listVolumeStates(): Promise<WireListVolumeStatesResponse> {
    return callCsi(this.client, "ListVolumeStates", {});
  }

  describeSnapshot(snapshotId: string): Promise<WireDescribeSnapshotResponse> {
    return callCsi(this.client, "DescribeSnapshot", { snapshotId });
  }

  startExport(target: { volumeId: string } | { snapshotId: string }, readOnly: boolean): Promise<WireExport> {
    return callCsi(this.client, "StartExport", { ...target, readOnly });
  }

  stopExport(target: { volumeId: string } | { snapshotId: string }): Promise<WireStopExportResponse> {
    return callCsi(this.client, "StopExport", target);
  }

  setPointPinned(snapshotId: string, pinned: boolean): Promise<WireSetPointPinnedResponse> {
    return callCsi(this.client, "SetPointPinned", { snapshotId, pinned });
  }

  listPinnedPoints(volumeId: string): Promise<WireListPinnedPointsResponse> {
    return callCsi(this.client, "ListPinnedPoints", { volumeId });
  }

  close(): void {
    this.client.close();
  }
}
