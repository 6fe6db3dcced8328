import { Server, type UntypedServiceImplementation } from "@grpc/grpc-js";
import { StatusError, asSnapblockError } from "../errors/index.js";
import { serverStream, unary, type UnaryOptions } from "../rpc/index.js";
import {
  fromWireKind,
  fromWireLimits,
  toWireSnapshot,
  toWireVolume,
  type WireCapacity,
  type WireCreateSnapshotRequest,
  type WireCreateVolumeRequest,
  type WireGetSnapshotResponse,
  type WireGetVolumeResponse,
  type WireListSnapshotsResponse,
  type WireListVolumesResponse,
  type WireNameRequest,
  type WireNodeInfo,
  type WireReadSnapshotChunksRequest,
  type WireResizeVolumeRequest,
  type WireSnapshot,
  type WireSnapshotChunk,
  type WireSpace,
  type WireVolume,
} from "./engine-messages.js";
import { checkAddressee } from "./call-addressee.js";
import { loadEngineProto } from "./engine-proto.js";
import { toEngineStatus } from "./engine-status.js";
import { serverCredentials, type EngineTransportOptions } from "./engine-tls.js";
import { readAllocatedChunks, type SnapshotOpener } from "./snapshot-chunks.js";
import type { LogFields, Logger } from "../log/index.js";
import type { EngineApi } from "../engine-api/index.js";

export interface EngineServerOptions {
  /** The engine to serve: in a node plugin, the node's LocalEngine. */
  engine: EngineApi;
  /** Opens snapshots for ReadSnapshotChunks; without it that call answers UNIMPLEMENTED. */
  snapshots?: SnapshotOpener;
  /** "host:port" to listen on (port 0: any free port, see EngineServer.port). */
  address: string;
  transport: EngineTransportOptions;
  /** Reported by GetNodeInfo. */
  version: string;
  logger: Logger;
}

/**
 * The engine service of a node plugin: every EngineApi operation of the engine it wraps, over
 * gRPC, behind mutual TLS. Each call is one JSON log line (method, name, duration, code) and
 * every failure goes through toEngineStatus, the service's one error mapping.
 */
export class EngineServer {
  private stopping: Promise<void> | undefined;

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private readonly logger: Logger,
  ) {}

  static async start(options: EngineServerOptions): Promise<EngineServer> {
    const creds = serverCredentials(options.transport, options.address);
    const server = new Server({ "grpc.max_receive_message_length": 4 * 1024 * 1024 });
    server.addService(loadEngineProto().service, handlers(options));
    const port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(options.address, creds, (err, bound) => {
        if (err) reject(asSnapblockError(err, `binding the engine service to ${options.address}`));
        else resolve(bound);
      });
    });
    options.logger.info("engine service listening", {
      address: options.address,
      port,
      tls: options.transport.tls !== undefined,
    });
    return new EngineServer(server, port, options.logger);
  }

  /** Stops accepting calls; calls in flight get graceMs to finish, then are cancelled. */
  shutdown(graceMs = 10_000): Promise<void> {
    this.stopping ??= (async () => {
      let timer: NodeJS.Timeout | undefined;
      const graceful = new Promise<boolean>((resolve) => this.server.tryShutdown(() => resolve(true)));
      const timedOut = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), graceMs);
      });
      const clean = await Promise.race([graceful, timedOut]);
      clearTimeout(timer);
      if (!clean) this.server.forceShutdown();
      this.logger.info("engine service stopped", { port: this.port });
    })();
    return this.stopping;
  }
}

function handlers(o: EngineServerOptions): UntypedServiceImplementation {
  const { engine } = o;
  const options = (quiet: boolean): UnaryOptions => ({
    logger: o.logger,
    service: "engine",
    quiet,
    statusOf: toEngineStatus,
  });
  // Every call: the addressee check first (a call meant for another node is refused), then the
  // handler; the name it acts on goes into the log line.
  const call = <Req, Res>(method: string, quiet: boolean, fn: (req: Req) => Promise<Res>) =>
    unary<Req, Res>(method, options(quiet), (req, scope, c) => {
      checkAddressee(c.metadata, engine.nodeId);
      scope.note(nameOf(req));
      return fn(req);
    });
  return {
    CreateVolume: call("CreateVolume", false, async (r: WireCreateVolumeRequest): Promise<WireVolume> => {
      const kind = r.source ? fromWireKind(r.source.kind) : undefined;
      if (r.source && !kind) throw new StatusError("FAILED_PRECONDITION", "source.kind is not set");
      const v = await engine.createVolume({
        name: r.name,
        sizeBytes: r.sizeBytes,
        meta: r.meta,
        ...(r.source && kind ? { source: { kind, name: r.source.name }, fullCopy: r.fullCopy } : {}),
      });
      return toWireVolume(v);
    }),
    GetVolume: call("GetVolume", true, async (r: WireNameRequest): Promise<WireGetVolumeResponse> => {
      const v = await engine.getVolume(r.name);
      return v ? { found: true, volume: toWireVolume(v) } : { found: false, volume: null };
    }),
    ListVolumes: call("ListVolumes", true, async (): Promise<WireListVolumesResponse> => {
      const l = await engine.listVolumes();
      return { volumes: l.items.map(toWireVolume), idWatermark: l.idWatermark };
    }),
    ResizeVolume: call("ResizeVolume", false, async (r: WireResizeVolumeRequest) =>
      toWireVolume(await engine.resizeVolume(r.name, r.sizeBytes)),
    ),
    DeleteVolume: call("DeleteVolume", false, async (r: WireNameRequest) => {
      await engine.deleteVolume(r.name);
      return {};
    }),
    CreateSnapshot: call(
      "CreateSnapshot",
      false,
      async (r: WireCreateSnapshotRequest): Promise<WireSnapshot> => {
        const limits = fromWireLimits(r.limits);
        return toWireSnapshot(
          await engine.createSnapshot({
            volume: r.volume,
            name: r.name,
            meta: r.meta,
            ...(limits ? { limits } : {}),
          }),
        );
      },
    ),
    GetSnapshot: call("GetSnapshot", true, async (r: WireNameRequest): Promise<WireGetSnapshotResponse> => {
      const s = await engine.getSnapshot(r.name);
      return s ? { found: true, snapshot: toWireSnapshot(s) } : { found: false, snapshot: null };
    }),
    ListSnapshots: call("ListSnapshots", true, async (): Promise<WireListSnapshotsResponse> => {
      const l = await engine.listSnapshots();
      return { snapshots: l.items.map(toWireSnapshot), idWatermark: l.idWatermark };
    }),
    DeleteSnapshot: call("DeleteSnapshot", false, async (r: WireNameRequest) => {
      await engine.deleteSnapshot(r.name);
      return {};
    }),
    GetCapacity: call("GetCapacity", true, (): Promise<WireCapacity> => engine.capacity()),
    GetSpace: call("GetSpace", true, (): Promise<WireSpace> => engine.space()),
    GetNodeInfo: call("GetNodeInfo", true, (): Promise<WireNodeInfo> =>
      Promise.resolve({ nodeId: engine.nodeId, ready: engine.isReady(), version: o.version }),
    ),
    ReadSnapshotChunks: serverStream<WireReadSnapshotChunksRequest, WireSnapshotChunk>(
      "ReadSnapshotChunks",
      options(false),
      (r, scope, c) => {
        checkAddressee(c.metadata, engine.nodeId);
        scope.note(nameOf(r));
        if (!o.snapshots)
          throw new StatusError("UNIMPLEMENTED", "this engine service cannot stream snapshots");
        return readAllocatedChunks(o.snapshots, r.name, r.maxMessageBytes);
      },
    ),
  };
}

function nameOf(request: unknown): LogFields {
  const name = (request as { name?: unknown } | null)?.name;
  return typeof name === "string" && name !== "" ? { name } : {};
}
