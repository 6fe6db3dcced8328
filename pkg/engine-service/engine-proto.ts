import type { ServiceClientConstructor, ServiceDefinition } from "@grpc/grpc-js";
import { loadProtoFile } from "../rpc/index.js";

/**
 * proto/engine.proto, loaded once with the same loader options as the CSI proto (pkg/rpc), so that
 * the hand-written message types in engine-messages.ts describe what grpc-js hands over.
 */
export interface EngineProto {
  service: ServiceDefinition;
  Client: ServiceClientConstructor;
}

let cached: EngineProto | undefined;

export function loadEngineProto(): EngineProto {
  if (!cached) {
    const pkg = loadProtoFile("engine.proto") as unknown as {
      snapblock: { engine: { v1: { Engine: ServiceClientConstructor } } };
    };
    const Client = pkg.snapblock.engine.v1.Engine;
    cached = { service: Client.service, Client };
  }
  return cached;
}

/** The Space service of proto/engine.proto (the operator's view, served beside CSI). */
export interface SpaceProto {
  service: ServiceDefinition;
  Client: ServiceClientConstructor;
}

let cachedSpace: SpaceProto | undefined;

export function loadSpaceProto(): SpaceProto {
  if (!cachedSpace) {
    const pkg = loadProtoFile("engine.proto") as unknown as {
      snapblock: { engine: { v1: { Space: ServiceClientConstructor } } };
    };
    const Client = pkg.snapblock.engine.v1.Space;
    cachedSpace = { service: Client.service, Client };
  }
  return cachedSpace;
}
