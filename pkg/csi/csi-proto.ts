import { loadProtoFile } from "../rpc/index.js";
import type { ProtoGrpcType } from "./generated/csi.js";

/** proto/csi.proto, loaded once (pkg/rpc's loader options match the generated types). */
let cached: ProtoGrpcType | undefined;

export function loadCsiProto(): ProtoGrpcType {
  cached ??= loadProtoFile("csi.proto") as unknown as ProtoGrpcType;
  return cached;
}
