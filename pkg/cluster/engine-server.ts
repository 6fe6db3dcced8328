import { once } from "node:events";
import {
  Server,
  type ServerWritableStream,
  type handleServerStreamingCall,
  type handleUnaryCall,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { CsiStatusError, type CsiLogFields, type CsiLogger, type EngineApi } from "../csi/index.js";
import { asSnapblockError } from "../errors/index.js";
import {
  fromWireKind,
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
  type WireVolume,
} from "./engine-messages.js";
import { checkAddressee } from "./call-addressee.js";
import { loadEngineProto } from "./engine-proto.js";
import { toEngineStatus } from "./engine-status.js";
import { serverCredentials, type EngineTransportOptions } from "./engine-tls.js";
import { readAllocatedChunks, type SnapshotOpener } from "./snapshot-chunks.js";

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
  logger: CsiLogger;
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
    private readonly logger: CsiLogger,
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
  const call = <Req, Res>(method: string, quiet: boolean, fn: (req: Req) => Promise<Res>) =>
    unary<Req, Res>({ method, quiet, logger: o.logger, nodeId: engine.nodeId }, fn);
  return {
    CreateVolume: call("CreateVolume", false, async (r: WireCreateVolumeRequest): Promise<WireVolume> => {
      const kind = r.source ? fromWireKind(r.source.kind) : undefined;
      if (r.source && !kind) throw new CsiStatusError("FAILED_PRECONDITION", "source.kind is not set");
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
      async (r: WireCreateSnapshotRequest): Promise<WireSnapshot> =>
        toWireSnapshot(
          await engine.createSnapshot({
            volume: r.volume,
            name: r.name,
            meta: r.meta,
            freezeFilesystem: !r.skipFilesystemFreeze,
          }),
        ),
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
    GetNodeInfo: call("GetNodeInfo", true, (): Promise<WireNodeInfo> =>
      Promise.resolve({ nodeId: engine.nodeId, ready: engine.isReady(), version: o.version }),
    ),
    ReadSnapshotChunks: stream(o),
  };
}

interface CallLog {
  method: string;
  quiet: boolean;
  logger: CsiLogger;
  /** The node this service serves (calls addressed to another are refused). */
  nodeId: string;
}

function finish(
  log: CallLog,
  fields: CsiLogFields,
  started: number,
  err?: unknown,
): ReturnType<typeof toEngineStatus> | undefined {
  const durationMs = Math.round((performance.now() - started) * 1000) / 1000;
  if (err === undefined) {
    const line = { method: log.method, ...fields, durationMs, code: "OK" };
    if (log.quiet) log.logger.debug("engine call", line);
    else log.logger.info("engine call", line);
    return undefined;
  }
  const status = toEngineStatus(err);
  const line = {
    method: log.method,
    ...fields,
    durationMs,
    code: status.mapped.codeName,
    message: status.mapped.message,
  };
  if (status.mapped.unexpected) log.logger.error("engine call failed unexpectedly", { ...line, err });
  else log.logger.info("engine call", line);
  return status;
}

function unary<Req, Res>(log: CallLog, fn: (req: Req) => Promise<Res>): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const started = performance.now();
    const fields = nameOf(call.request);
    void (async () => {
      checkAddressee(call.metadata, log.nodeId);
      return fn(call.request);
    })().then(
      (res) => {
        finish(log, fields, started);
        callback(null, res);
      },
      (err: unknown) => {
        const status = finish(log, fields, started, err);
        callback(status?.error ?? null, null);
      },
    );
  };
}

function stream(
  o: EngineServerOptions,
): handleServerStreamingCall<WireReadSnapshotChunksRequest, WireSnapshotChunk> {
  const log: CallLog = {
    method: "ReadSnapshotChunks",
    quiet: false,
    logger: o.logger,
    nodeId: o.engine.nodeId,
  };
  return (call: ServerWritableStream<WireReadSnapshotChunksRequest, WireSnapshotChunk>) => {
    const started = performance.now();
    const fields = nameOf(call.request);
    const run = async (): Promise<void> => {
      checkAddressee(call.metadata, log.nodeId);
      if (!o.snapshots)
        throw new CsiStatusError("UNIMPLEMENTED", "this engine service cannot stream snapshots");
      let bytes = 0;
      for await (const chunk of readAllocatedChunks(
        o.snapshots,
        call.request.name,
        call.request.maxMessageBytes,
      )) {
        if (call.cancelled) return;
        bytes += chunk.data.length;
        // Respect backpressure: a slow receiver must not make us buffer the whole snapshot.
        if (!call.write(chunk)) await Promise.race([once(call, "drain"), once(call, "cancelled")]);
      }
      fields.bytes = bytes;
    };
    void run().then(
      () => {
        finish(log, fields, started);
        call.end();
      },
      (err: unknown) => {
        const status = finish(log, fields, started, err);
        call.emit("error", status?.error);
      },
    );
  };
}

function nameOf(request: unknown): CsiLogFields {
  const name = (request as { name?: unknown } | null)?.name;
  return typeof name === "string" && name !== "" ? { name } : {};
}
