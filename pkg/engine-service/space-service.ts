import {
  credentials,
  type Client,
  type ServiceError,
  Metadata,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { unary } from "../rpc/index.js";
import { fromWireSpace, type WireClusterSpace } from "./engine-messages.js";
import { loadSpaceProto, type SpaceProto } from "./engine-proto.js";
import type { Logger } from "../log/index.js";
import type { EngineApi, EngineSpace } from "../engine-api/index.js";

/**
 * The Space service (proto/engine.proto): the operator CLI's view of who holds the pools' space,
 * served beside CSI on the socket of the controller (cluster mode: every node it knows, each
 * asked over its engine service) or of the local plugin. CSI has no field for these figures, so
 * they travel here; the data is the EngineApi's space() node by node.
 */
export function spaceServiceHandlers(engine: EngineApi, logger: Logger): UntypedServiceImplementation {
  return {
    GetSpace: unary(
      "GetSpace",
      { logger, service: "space", quiet: true },
      async (): Promise<WireClusterSpace> => ({
        nodes: await Promise.all(
          engine.nodeEngines().map(async (e) => {
            try {
              return { nodeId: e.nodeId, space: await e.space(), error: "" };
            } catch (err) {
              // One node down leaves the others' figures: the CLI shows which node did not answer.
              return {
                nodeId: e.nodeId,
                space: null,
                error: err instanceof Error ? err.message : String(err),
              };
            }
          }),
        ),
      }),
    ),
  };
}

/** The service definition to register next to CSI (CsiServer's extraServices). */
export function spaceService(): SpaceProto["service"] {
  return loadSpaceProto().service;
}

export interface NodeSpaceReport {
  nodeId: string;
  space?: EngineSpace;
  error?: string;
}

/** Client side (the operator CLI): every node's space, from the socket at grpc address `address`. */
export async function fetchSpace(address: string, deadlineMs = 60_000): Promise<NodeSpaceReport[]> {
  const { Client: SpaceClient } = loadSpaceProto();
  const client: Client = new SpaceClient(address, credentials.createInsecure());
  try {
    const res = await new Promise<WireClusterSpace>((resolve, reject) => {
      const fn = (client as unknown as Record<string, unknown>).GetSpace as (
        req: object,
        md: Metadata,
        opts: { deadline: Date },
        cb: (err: ServiceError | null, res?: WireClusterSpace) => void,
      ) => void;
      fn.call(client, {}, new Metadata(), { deadline: new Date(Date.now() + deadlineMs) }, (err, r) =>
        err ? reject(err) : resolve(r!),
      );
    });
    return res.nodes.map((n) =>
      n.space ? { nodeId: n.nodeId, space: fromWireSpace(n.space) } : { nodeId: n.nodeId, error: n.error },
    );
  } finally {
    client.close();
  }
}
