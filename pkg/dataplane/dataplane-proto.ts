import type { ServiceClientConstructor, ServiceDefinition } from "@grpc/grpc-js";
import { loadProtoFile } from "../rpc/index.js";

/** proto/dataplane.proto, loaded once (pkg/rpc loader options; messages in dataplane-messages.ts). */
export interface DataPlaneProto {
  service: ServiceDefinition;
  Client: ServiceClientConstructor;
}

let cached: DataPlaneProto | undefined;

export function loadDataPlaneProto(): DataPlaneProto {
  if (!cached) {
    const pkg = loadProtoFile("dataplane.proto") as unknown as {
      snapblock: { dataplane: { v1: { DataPlane: ServiceClientConstructor } } };
    };
    const Client = pkg.snapblock.dataplane.v1.DataPlane;
    cached = { service: Client.service, Client };
  }
  return cached;
}
