import { Metadata, credentials, type Client, type ServiceError } from "@grpc/grpc-js";
import { loadCsiProto } from "./csi-proto.js";
import type { ControllerClient } from "./generated/csi/v1/Controller.js";
import type { GroupControllerClient } from "./generated/csi/v1/GroupController.js";
import type { IdentityClient } from "./generated/csi/v1/Identity.js";
import type { NodeClient } from "./generated/csi/v1/Node.js";
import type { SnapshotMetadataClient } from "./generated/csi/v1/SnapshotMetadata.js";
import { grpcUnixAddress } from "./unix-endpoint.js";

/** grpc-js clients of the CSI services on one socket (the CLI, tests, cluster tooling). */
export interface CsiClients {
  identity: IdentityClient;
  controller: ControllerClient;
  groupController: GroupControllerClient;
  node: NodeClient;
  snapshotMetadata: SnapshotMetadataClient;
  close(): void;
}

export function connectCsi(socketPath: string): CsiClients {
  const proto = loadCsiProto().csi.v1;
  const address = grpcUnixAddress(socketPath);
  const creds = credentials.createInsecure();
  const identity = new proto.Identity(address, creds);
  const controller = new proto.Controller(address, creds);
  const groupController = new proto.GroupController(address, creds);
  const node = new proto.Node(address, creds);
  const snapshotMetadata = new proto.SnapshotMetadata(address, creds);
  return {
    identity,
    controller,
    groupController,
    node,
    snapshotMetadata,
    close: () => {
      for (const c of [identity, controller, groupController, node, snapshotMetadata]) c.close();
    },
  };
}

type UnaryMethod = (
  request: object,
  metadata: Metadata,
  options: { deadline?: Date },
  callback: (err: ServiceError | null, response?: unknown) => void,
) => unknown;

/**
 * Calls a unary method by its RPC name and resolves with the response, or rejects with the
 * grpc-js ServiceError (code, details). Deadline in ms (default 60 s).
 */
export function callCsi<Res>(
  client: Client,
  method: string,
  request: object,
  deadlineMs = 60_000,
): Promise<Res> {
  const fn = (client as unknown as Record<string, UnaryMethod | undefined>)[method];
  if (typeof fn !== "function") return Promise.reject(new Error(`the CSI client has no method ${method}`));
  return new Promise<Res>((resolve, reject) => {
    fn.call(
      client,
      request,
      new Metadata(),
      { deadline: new Date(Date.now() + deadlineMs) },
      (err, response) => {
        if (err) reject(err);
        else resolve(response as Res);
      },
    );
  });
}
