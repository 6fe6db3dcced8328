import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadPackageDefinition, type GrpcObject } from "@grpc/grpc-js";
import { loadSync, type Options } from "@grpc/proto-loader";
import { SnapblockError } from "../errors/index.js";

/**
 * How every snapblock proto (proto/csi.proto, proto/engine.proto) is loaded at runtime. These are
 * the options the committed CSI types in pkg/csi/generated were made with
 * (proto/generate-types.js) and that the engine service's hand-written message types describe:
 * camelCase fields, int64 as JS numbers (every size snapblock handles is below 2^53), enums as
 * their names, defaults for absent fields, and a virtual field naming the member of each oneof
 * that is set.
 */
export const PROTO_LOADER_OPTIONS: Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** proto/NAME of the installation: the nearest one above this module (source tree or dist/). */
export function findProtoFile(name: string): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, "proto", name);
    if (existsSync(candidate)) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) {
      throw new SnapblockError("NOT_FOUND", `proto/${name} not found above the snapblock installation`);
    }
    dir = parent;
  }
}

/** Loads proto/NAME with PROTO_LOADER_OPTIONS. */
export function loadProtoFile(name: string): GrpcObject {
  return loadPackageDefinition(loadSync(findProtoFile(name), PROTO_LOADER_OPTIONS));
}
