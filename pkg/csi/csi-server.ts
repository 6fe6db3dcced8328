import {
  Server,
  ServerCredentials,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { asSnapblockError } from "../errors/index.js";
import { prepareSocketPath, removeOwnSocket, restrictSocket } from "../files/index.js";
import { loadCsiProto } from "./csi-proto.js";
import { grpcUnixAddress } from "./unix-endpoint.js";
import type { Logger } from "../log/index.js";

export interface CsiServerOptions {
  /** Absolute path of the unix socket to serve on. */
  socketPath: string;
  identity: UntypedServiceImplementation;
  controller?: UntypedServiceImplementation;
  /** The GroupController service (group snapshots), beside the Controller. */
  groupController?: UntypedServiceImplementation;
  node?: UntypedServiceImplementation;
  /** The SnapshotMetadata service (changed-block tracking), where the Controller is served. */
  snapshotMetadata?: UntypedServiceImplementation;
  /**
   * Services of snapblock's own on the same socket (the operator service of `snapblock local`),
   * each with the name it is logged under.
   */
  extraServices?: Array<{
    name: string;
    definition: ServiceDefinition;
    implementation: UntypedServiceImplementation;
  }>;
  logger: Logger;
}

/** Owner and group only: the socket gives full control over every volume. */
const SOCKET_MODE = 0o660;

/**
 * The CSI gRPC server: Identity, and Controller and/or Node, on one unix socket. Handlers are
 * registered for the methods the loaded proto defines; the rest of a service answers
 * UNIMPLEMENTED (grpc-js), and services not served at all (GroupController in a node plugin;
 * SnapshotMetadata where it is not given) are unknown to the server.
 */
export class CsiServer {
  private stopping: Promise<void> | undefined;

  private constructor(
    private readonly server: Server,
    readonly socketPath: string,
    private readonly socketInode: number,
    private readonly logger: Logger,
  ) {}

  static async start(options: CsiServerOptions): Promise<CsiServer> {
    const proto = loadCsiProto().csi.v1;
    const server = new Server({ "grpc.max_receive_message_length": 4 * 1024 * 1024 });
    server.addService(proto.Identity.service, only(proto.Identity.service, options.identity));
    if (options.controller)
      server.addService(proto.Controller.service, only(proto.Controller.service, options.controller));
    if (options.groupController)
      server.addService(
        proto.GroupController.service,
        only(proto.GroupController.service, options.groupController),
      );
    if (options.node) server.addService(proto.Node.service, only(proto.Node.service, options.node));
    if (options.snapshotMetadata) {
      server.addService(
        proto.SnapshotMetadata.service,
        only(proto.SnapshotMetadata.service, options.snapshotMetadata),
      );
    }
    for (const extra of options.extraServices ?? [])
      server.addService(extra.definition, extra.implementation);
    await prepareSocketPath(options.socketPath, "CSI");
    await new Promise<void>((resolve, reject) => {
      server.bindAsync(grpcUnixAddress(options.socketPath), ServerCredentials.createInsecure(), (err) => {
        if (err) reject(asSnapblockError(err, `binding the CSI socket ${options.socketPath}`));
        else resolve();
      });
    });
    let inode: number;
    try {
      inode = await restrictSocket(options.socketPath, SOCKET_MODE);
    } catch (err) {
      server.forceShutdown();
      throw asSnapblockError(err, `securing the CSI socket ${options.socketPath}`);
    }
    options.logger.info("csi server listening", {
      socket: options.socketPath,
      services: [
        "Identity",
        ...(options.controller ? ["Controller"] : []),
        ...(options.groupController ? ["GroupController"] : []),
        ...(options.node ? ["Node"] : []),
        ...(options.snapshotMetadata ? ["SnapshotMetadata"] : []),
        ...(options.extraServices ?? []).map((e) => e.name),
      ],
    });
    return new CsiServer(server, options.socketPath, inode, options.logger);
  }

  /**
   * Stops accepting calls, lets the calls in flight finish (for at most graceMs, then cancels
   * them) and removes the socket file.
   */
  shutdown(graceMs = 30_000): Promise<void> {
    this.stopping ??= (async () => {
      const graceful = new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), graceMs);
      });
      const forced = await Promise.race([graceful.then(() => false), timedOut]);
      clearTimeout(timer);
      if (forced) {
        this.logger.warn("csi calls still running after the grace period; cancelling them", { graceMs });
        this.server.forceShutdown();
      }
      await removeOwnSocket(this.socketPath, this.socketInode);
      this.logger.info("csi server stopped", { socket: this.socketPath });
    })();
    return this.stopping;
  }
}

/** The implementation restricted to the methods the loaded service defines. */
function only(service: ServiceDefinition, impl: UntypedServiceImplementation): UntypedServiceImplementation {
  return Object.fromEntries(Object.keys(service).flatMap((name) => (impl[name] ? [[name, impl[name]]] : [])));
}
