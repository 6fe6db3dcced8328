import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadPackageDefinition } from "@grpc/grpc-js";
import { loadSync, type Options } from "@grpc/proto-loader";
import { SnapblockError } from "../errors/index.js";
import type { ProtoGrpcType } from "./generated/csi.js";

/**
 * Loading proto/csi.proto at runtime. These options are the ones the committed types in
 * ./generated were made with (proto/generate-types.js): camelCase fields, int64 as JS numbers
 * (every size snapblock handles is below 2^53), enums as their names, defaults for absent fields,
 * and a virtual field naming the member of each oneof that is set.
 */
export const CSI_LOADER_OPTIONS: Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

let cached: ProtoGrpcType | undefined;

export function loadCsiProto(): ProtoGrpcType {
  cached ??= loadPackageDefinition(loadSync(findCsiProto(), CSI_LOADER_OPTIONS)) as unknown as ProtoGrpcType;
  return cached;
}

/** proto/csi.proto of the installation: the nearest one above this module (source or dist/). */
export function findCsiProto(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, "proto", "csi.proto");
    if (existsSync(candidate)) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) {
      throw new SnapblockError("NOT_FOUND", "proto/csi.proto not found above the snapblock installation");
    }
    dir = parent;
  }
}
