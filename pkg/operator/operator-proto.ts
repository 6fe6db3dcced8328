import type { ServiceClientConstructor, ServiceDefinition } from "@grpc/grpc-js";
import { loadProtoFile } from "../rpc/index.js";

/** proto/operator.proto, loaded once (pkg/rpc loader options; messages in operator-messages.ts). */
export interface OperatorProto {
  service: ServiceDefinition;
  Client: ServiceClientConstructor;
}

let cached: OperatorProto | undefined;

export function loadOperatorProto(): OperatorProto {
  if (!cached) {
    const pkg = loadProtoFile("operator.proto") as unknown as {
      snapblock: { operator: { v1: { Operator: ServiceClientConstructor } } };
    };
    const Client = pkg.snapblock.operator.v1.Operator;
    cached = { service: Client.service, Client };
  }
  return cached;
}
