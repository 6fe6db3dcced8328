import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadPackageDefinition, type GrpcObject } from "@grpc/grpc-js";
import { fromJSON, loadSync, type Options } from "@grpc/proto-loader";
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

/**
 * Loads proto/NAME with PROTO_LOADER_OPTIONS. In a build (dist/proto), the definitions were
 * parsed at build time (proto/build-descriptors.js) and are read from NAME.json beside the file:
 * the same definitions, without the cost of parsing the text on every CLI call.
 */
export function loadProtoFile(name: string): GrpcObject {
  const file = findProtoFile(name);
  const parsed = file.replace(/\.proto$/, ".json");
  if (existsSync(parsed)) {
    return loadPackageDefinition(
      fromJSON(
        JSON.parse(readFileSync(parsed, "utf8")) as Parameters<typeof fromJSON>[0],
        PROTO_LOADER_OPTIONS,
      ),
    );
  }
  return loadPackageDefinition(loadSync(file, PROTO_LOADER_OPTIONS));
}
