import {
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type ServerWritableStream,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { StatusError, asSnapblockError } from "../errors/index.js";
import { serverStream, unary, type CallScope, type UnaryOptions } from "../rpc/index.js";
import {
  fromWireHolder,
  fromWireKind,
  fromWireLimits,
  toWireSnapshot,
  toWireVolume,
  type WireBlockMetadataPage,
  type WireCapacity,
  type WireChunkData,
  type WireChunkRuns,
  type WireGrantPullRequest,
  type WireListBlockMetadataRequest,
  type WireListChunksRequest,
  type WireTombstones,
  type WireReadChunksRequest,
  type WireReplicateSnapshotRequest,
  type WireSetHoldersRequest,
  type WireCreateSnapshotRequest,
  type WireCreateSnapshotGroupRequest,
  type WireCreateSnapshotGroupResponse,
  type WireGetGroupRecordResponse,
  type WireGroupRecordRequest,
  type WireHoldWritesRequest,
  type WireCreateVolumeRequest,
  type WireGetSnapshotResponse,
  type WireGetVolumeResponse,
  type WireListSnapshotsResponse,
  type WireListVolumesResponse,
  type WireNameRequest,
  type WireNodeInfo,
  type WirePinPointRequest,
  type WireReadSnapshotChunksRequest,
  type WireResizeVolumeRequest,
  type WireSetProtectionRequest,
  type WireSnapshot,
  type WireSnapshotChunk,
  type WireSpace,
  type WireVolume,
} from "./engine-messages.js";
import { checkAddressee } from "./call-addressee.js";
import { loadEngineProto } from "./engine-proto.js";
import { toEngineStatus } from "./engine-status.js";
import { authorize, type Access, type PullGrants } from "./engine-access.js";
import { describeIdentity, identityOfCertificate, type EngineIdentity } from "./engine-identity.js";
import { parseHostPort, readTls, serverTls, type EngineTransportOptions } from "./engine-tls.js";
import { listenTls, type TlsListener } from "./tls-listener.js";
import { CHUNK_CHANNEL_PROTOCOL, ChunkChannelServer } from "./chunk-channel.js";
import {
  listChunkRuns,
  readAllocatedChunks,
  readChunkContents,
  type SnapshotOpener,
} from "./snapshot-chunks.js";
import type { LogFields, Logger } from "../log/index.js";
import type { EngineApi, EnginePointPins, EngineReplication } from "../engine-api/index.js";

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
  /** Which nodes may read which snapshots (ReadSnapshotChunks); without it, none may. */
  pullGrants?: PullGrants;
  /** Snapshots beyond this node (replicas, cross-node restores); without it those calls are UNIMPLEMENTED. */
  replication?: EngineReplication;
  /** Pins of exported recovery points (PinPoint); without it that call is UNIMPLEMENTED. */
  pointPins?: EnginePointPins;
  /**
   * Offer the chunk channel beside gRPC on the TLS port (chunk-channel.ts; default true). Off,
   * the port speaks gRPC only, as before the channel existed, and pulls use ReadChunks.
   */
  chunkChannel?: boolean;
}

/**
 * The engine service of a node plugin: every EngineApi operation of the engine it wraps, over
 * gRPC, behind mutual TLS 1.3 (tls-listener.ts). Every call is authorized by the caller's
 * identity first (engine-access.ts), and is one JSON log line (method, caller, name, duration,
 * code); every failure goes through toEngineStatus, the service's one error mapping.
 */
export class EngineServer {
  private stopping: Promise<void> | undefined;

  private constructor(
    private readonly server: Server,
    private readonly tls: TlsListener | undefined,
    readonly port: number,
    private readonly logger: Logger,
    private readonly chunkChannel: ChunkChannelServer | undefined,
  ) {}

  static async start(options: EngineServerOptions): Promise<EngineServer> {
    const pem = serverTls(options.transport, options.address);
    const server = new Server({ "grpc.max_receive_message_length": 4 * 1024 * 1024 });
    server.addService(loadEngineProto().service, handlers(options, pem !== undefined));
    let tlsListener: TlsListener | undefined;
    let chunkChannel: ChunkChannelServer | undefined;
    let port: number;
    if (pem) {
      // TLS ends in our own listener; the gRPC server sees only verified connections, and a
      // connection that chose the chunk channel in the handshake goes to it instead.
      const injector = server.createConnectionInjector(ServerCredentials.createInsecure());
      const offered = options.chunkChannel ?? true;
      const channel = new ChunkChannelServer({
        nodeId: options.engine.nodeId,
        ...(options.snapshots ? { snapshots: options.snapshots } : {}),
        ...(options.pullGrants ? { pullGrants: options.pullGrants } : {}),
        logger: options.logger,
      });
      if (offered) chunkChannel = channel;
      tlsListener = await listenTls({
        at: parseHostPort(options.address),
        pem,
        protocols: offered ? [CHUNK_CHANNEL_PROTOCOL, "h2"] : ["h2"],
        onConnection: (socket) =>
          socket.alpnProtocol === CHUNK_CHANNEL_PROTOCOL
            ? channel.serve(socket)
            : injector.injectConnection(socket),
        logger: options.logger,
      });
      port = tlsListener.port;
    } else {
      port = await new Promise<number>((resolve, reject) => {
        server.bindAsync(options.address, ServerCredentials.createInsecure(), (err, bound) => {
          if (err) reject(asSnapblockError(err, `binding the engine service to ${options.address}`));
          else resolve(bound);
        });
      });
    }
    options.logger.info("engine service listening", {
      address: options.address,
      port,
      tls: pem !== undefined,
    });
    return new EngineServer(server, tlsListener, port, options.logger, chunkChannel);
  }

  /** Reads the TLS source again and serves new connections with it (after a renewal). */
  reloadTls(transport: EngineTransportOptions): void {
    if (this.tls && transport.tls) this.tls.reload(readTls(transport.tls));
  }

  /** Stops accepting calls; calls in flight get graceMs to finish, then are cancelled. */
  shutdown(graceMs = 10_000): Promise<void> {
    this.stopping ??= (async () => {
      const listenerClosed = this.tls?.close();
      this.chunkChannel?.close();
      let timer: NodeJS.Timeout | undefined;
      const graceful = new Promise<boolean>((resolve) => this.server.tryShutdown(() => resolve(true)));
      const timedOut = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), graceMs);
      });
      const clean = await Promise.race([graceful, timedOut]);
      clearTimeout(timer);
      if (!clean) this.server.forceShutdown();
      await listenerClosed;
      this.logger.info("engine service stopped", { port: this.port });
    })();
    return this.stopping;
  }
}

/** Who may call each method (engine-access.ts). */
const ACCESS: Record<string, Access> = {
  CreateVolume: "controller",
  GetVolume: "controller",
  ListVolumes: "controller",
  ResizeVolume: "controller",
  SetProtection: "controller",
  DeleteVolume: "controller",
  CreateSnapshot: "controller",
  GetSnapshot: "controller",
  ListSnapshots: "controller",
  DeleteSnapshot: "controller",
  // Holding a node's writes stalls its workloads: only the controller, for a group snapshot.
  CreateSnapshotGroup: "controller",
  HoldWrites: "controller",
  ReleaseWrites: "controller",
  PutGroupRecord: "controller",
  GetGroupRecord: "controller",
  DeleteGroupRecord: "controller",
  GetCapacity: "controller",
  GetSpace: "controller",
  GetNodeInfo: "any",
  ReadSnapshotChunks: "pull",
  ReplicateSnapshot: "controller",
  SetHolders: "controller",
  GrantPull: "controller",
  AddTombstones: "controller",
  ListTombstones: "controller",
  ListChunks: "pull",
  ReadChunks: "pull",
  ListBlockMetadata: "controller",
  // A pin decides what thinning may delete: the controller's, like DeleteSnapshot.
  PinPoint: "controller",
};

/** The caller named by the connection's client certificate (undefined over plaintext). */
function callerOf(
  call: ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>,
): EngineIdentity | undefined {
  return identityOfCertificate(call.getAuthContext().sslPeerCertificate);
}

function handlers(o: EngineServerOptions, tls: boolean): UntypedServiceImplementation {
  const { engine } = o;
  const replication = (): EngineReplication => {
    if (!o.replication)
      throw new StatusError("UNIMPLEMENTED", "this engine service does not copy snapshots between nodes");
    return o.replication;
  };
  const pointPins = (): EnginePointPins => {
    if (!o.pointPins)
      throw new StatusError("UNIMPLEMENTED", "this engine service does not pin recovery points");
    return o.pointPins;
  };
  const snapshots = (): SnapshotOpener => {
    if (!o.snapshots) throw new StatusError("UNIMPLEMENTED", "this engine service cannot stream snapshots");
    return o.snapshots;
  };
  // Every call: who is calling (logged), may they (PERMISSION_DENIED otherwise), is it meant for
  // this node (FAILED_PRECONDITION otherwise); then the handler.
  const admit = async (
    method: string,
    req: unknown,
    scope: CallScope,
    c: ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>,
  ): Promise<void> => {
    const identity = tls ? callerOf(c) : undefined;
    scope.note({ caller: tls ? describeIdentity(identity) : "plaintext", ...nameOf(req) });
    const name = (req as { name?: unknown } | null)?.name;
    await authorize(
      ACCESS[method] ?? "controller",
      { tls, identity },
      { method, ...(typeof name === "string" ? { snapshot: name } : {}) },
      o.pullGrants,
    );
    checkAddressee(c.metadata, engine.nodeId);
  };
  const options = (quiet: boolean): UnaryOptions => ({
    logger: o.logger,
    service: "engine",
    quiet,
    statusOf: toEngineStatus,
  });
  // Every call: the addressee check first (a call meant for another node is refused), then the
  // handler; the name it acts on goes into the log line.
  const call = <Req, Res>(method: string, quiet: boolean, fn: (req: Req) => Promise<Res>) =>
    unary<Req, Res>(method, options(quiet), async (req, scope, c) => {
      await admit(method, req, scope, c);
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
        ...(r.source && kind
          ? {
              source: {
                kind,
                name: r.source.name,
                ...(r.source.nodeId
                  ? { nodeId: r.source.nodeId, holders: r.source.holders.map(fromWireHolder) }
                  : {}),
              },
              fullCopy: r.fullCopy,
            }
          : {}),
        ...(r.protection !== "" ? { protection: r.protection } : {}),
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
    SetProtection: call("SetProtection", false, async (r: WireSetProtectionRequest) =>
      toWireVolume(await engine.setProtection(r.name, r.policy)),
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
            freezeFilesystem: !r.skipFilesystemFreeze,
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
    CreateSnapshotGroup: call(
      "CreateSnapshotGroup",
      false,
      async (r: WireCreateSnapshotGroupRequest): Promise<WireCreateSnapshotGroupResponse> => {
        const made = await engine.createSnapshotGroup({
          members: r.members.map((m) => ({ volume: m.volume, name: m.name, meta: m.meta })),
          ...(r.holdId ? { holdId: r.holdId } : {}),
        });
        return { snapshots: made.map(toWireSnapshot) };
      },
    ),
    HoldWrites: call("HoldWrites", false, (r: WireHoldWritesRequest) =>
      engine.holdWrites({ volumes: r.volumes, timeoutMs: r.timeoutMs }),
    ),
    ReleaseWrites: call("ReleaseWrites", false, (r: { holdId: string }) => engine.releaseWrites(r.holdId)),
    PutGroupRecord: call("PutGroupRecord", false, async (r: WireGroupRecordRequest) => {
      await engine.putGroupRecord(r.name, r.record);
      return {};
    }),
    GetGroupRecord: call(
      "GetGroupRecord",
      true,
      async (r: WireNameRequest): Promise<WireGetGroupRecordResponse> => {
        const record = await engine.getGroupRecord(r.name);
        return { found: record !== undefined, record: { ...(record ?? {}) } };
      },
    ),
    DeleteGroupRecord: call("DeleteGroupRecord", false, async (r: WireNameRequest) => {
      await engine.deleteGroupRecord(r.name);
      return {};
    }),
    GetCapacity: call("GetCapacity", true, (): Promise<WireCapacity> => engine.capacity()),
    GetSpace: call("GetSpace", true, (): Promise<WireSpace> => engine.space()),
    GetNodeInfo: call("GetNodeInfo", true, (): Promise<WireNodeInfo> =>
      Promise.resolve({ nodeId: engine.nodeId, ready: engine.isReady(), version: o.version }),
    ),
    ReplicateSnapshot: call(
      "ReplicateSnapshot",
      false,
      async (r: WireReplicateSnapshotRequest): Promise<WireSnapshot> =>
        toWireSnapshot(
          await replication().replicateSnapshot({
            origin: r.origin,
            sizeBytes: r.sizeBytes,
            holders: r.holders.map(fromWireHolder),
            ...(r.baseOrigin ? { baseOrigin: r.baseOrigin } : {}),
            meta: r.meta,
          }),
        ),
    ),
    SetHolders: call("SetHolders", false, async (r: WireSetHoldersRequest) => {
      await replication().setHolders(r.origin, r.holders.map(fromWireHolder));
      return {};
    }),
    GrantPull: call("GrantPull", false, async (r: WireGrantPullRequest) => {
      await replication().grantPull(r.name, r.nodeId);
      return {};
    }),
    AddTombstones: call("AddTombstones", false, async (r: WireTombstones) => {
      await replication().addTombstones(r.tombstones);
      return {};
    }),
    PinPoint: call("PinPoint", false, async (r: WirePinPointRequest) =>
      toWireSnapshot(await pointPins().pinPoint(r.name, r.pinned)),
    ),
    ListTombstones: call("ListTombstones", true, async (): Promise<WireTombstones> => ({
      tombstones: await replication().listTombstones(),
    })),
    // Back-pressured by serverStream: the next page is computed only once the last one is sent.
    ListBlockMetadata: serverStream<WireListBlockMetadataRequest, WireBlockMetadataPage>(
      "ListBlockMetadata",
      options(false),
      async function* (r, scope, c) {
        await admit("ListBlockMetadata", r, scope, c);
        if (r.baseName !== "") scope.note({ base: r.baseName });
        yield* engine.blockMetadata({
          snapshot: r.name,
          ...(r.baseName !== "" ? { baseSnapshot: r.baseName } : {}),
          startingOffset: r.startingOffset,
          maxResults: r.maxResults,
        });
      },
    ),
    ListChunks: serverStream<WireListChunksRequest, WireChunkRuns>(
      "ListChunks",
      options(false),
      async function* (r, scope, c) {
        await admit("ListChunks", r, scope, c);
        yield* listChunkRuns(snapshots(), r);
      },
    ),
    ReadChunks: serverStream<WireReadChunksRequest, WireChunkData>(
      "ReadChunks",
      options(true),
      async function* (r, scope, c) {
        await admit("ReadChunks", r, scope, c);
        scope.note({ chunks: r.chunks.length });
        yield* readChunkContents(snapshots(), r);
      },
    ),
    ReadSnapshotChunks: serverStream<WireReadSnapshotChunksRequest, WireSnapshotChunk>(
      "ReadSnapshotChunks",
      options(false),
      async function* (r, scope, c) {
        await admit("ReadSnapshotChunks", r, scope, c);
        if (!o.snapshots)
          throw new StatusError("UNIMPLEMENTED", "this engine service cannot stream snapshots");
        yield* readAllocatedChunks(o.snapshots, r.name, r.maxMessageBytes);
      },
    ),
  };
}

function nameOf(request: unknown): LogFields {
  const name = (request as { name?: unknown } | null)?.name;
  return typeof name === "string" && name !== "" ? { name } : {};
}
