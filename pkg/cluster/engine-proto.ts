import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadPackageDefinition, type ServiceClientConstructor, type ServiceDefinition } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { SnapblockError } from "../errors/index.js";
import { CSI_LOADER_OPTIONS } from "../csi/index.js";

/**
 * Loading proto/engine.proto at runtime, with the same loader options as the CSI proto
 * (camelCase fields, int64 as JS numbers, enums as names, defaults for absent fields), so that
 * the hand-written message types in engine-messages.ts describe what grpc-js hands over.
 */
export interface EngineProto {
  service: ServiceDefinition;
  Client: ServiceClientConstructor;
}

let cached: EngineProto | undefined;

export function loadEngineProto(): EngineProto {
  if (!cached) {
    const pkg = loadPackageDefinition(loadSync(findEngineProto(), CSI_LOADER_OPTIONS)) as unknown as {
      snapblock: { engine: { v1: { Engine: ServiceClientConstructor } } };
    };
    const Client = pkg.snapblock.engine.v1.Engine;
    cached = { service: Client.service, Client };
  }
  return cached;
}

/** proto/engine.proto of the installation: the nearest one above this module (source or dist/). */
export function findEngineProto(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, "proto", "engine.proto");
    if (existsSync(candidate)) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) {
      throw new SnapblockError("NOT_FOUND", "proto/engine.proto not found above the snapblock installation");
    }
    dir = parent;
  }
}
