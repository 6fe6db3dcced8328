import { Server, ServerCredentials, type ServerWritableStream } from "@grpc/grpc-js";
import { SnapblockError, asSnapblockError } from "../errors/index.js";
import { toEngineStatus } from "../engine-service/index.js";
import { prepareSocketPath, removeOwnSocket, restrictSocket } from "../files/index.js";
import type { Logger } from "../log/index.js";
import type { NodeDataPlane } from "../node/index.js";
import { serverStream, unary, type CallScope } from "../rpc/index.js";
import {
  toWireAttachment,
  toWireFacts,
  toWireInfo,
  type WireAttachRequest,
  type WireAttachment,
  type WireEngineNameRequest,
  type WireFindAttachmentRequest,
  type WireFindAttachmentResponse,
  type WireGetVolumeResponse,
  type WireListAttachmentsResponse,
  type WireUpdateVolumeMetaRequest,
} from "./dataplane-messages.js";
import { loadDataPlaneProto } from "./dataplane-proto.js";

export interface DataPlaneServerOptions {
  /** The node's data plane, in this process (pkg/node LocalDataPlane). */
  dataPlane: NodeDataPlane;
  /** Absolute path of the unix socket; its directory is made 0700 and must be the owner's alone. */
  socketPath: string;
  logger: Logger;
  /** Longest a HoldVolume stream keeps freezes out (default 5 minutes): a stuck caller cannot block snapshots for ever. */
  maxHoldMs?: number;
}

/** Owner only: the socket attaches and detaches every volume of the node. */
const SOCKET_MODE = 0o600;
const DEFAULT_MAX_HOLD_MS = 5 * 60_000;

/**
 * The data plane service (proto/dataplane.proto) on a unix socket: the node plugin's way to the
 * pool, the exports and the block devices of its node. Every call is one log line and maps its
 * failure with the project's one table (pkg/rpc), the SnapblockError code riding along in
 * trailing metadata (engine-service toEngineStatus) so that the node plugin raises the very
 * error the data plane raised.
 */
export class DataPlaneServer {
  private stopping: Promise<void> | undefined;

  private constructor(
    private readonly server: Server,
    private readonly socketPath: string,
    private readonly inode: number,
    private readonly logger: Logger,
  ) {}

  static async start(options: DataPlaneServerOptions): Promise<DataPlaneServer> {
    const server = new Server();
    server.addService(loadDataPlaneProto().service, handlers(options));
    await prepareSocketPath(options.socketPath, "data plane");
    await new Promise<void>((resolve, reject) => {
      server.bindAsync(`unix:${options.socketPath}`, ServerCredentials.createInsecure(), (err) => {
        if (err) reject(asSnapblockError(err, `binding the data plane socket ${options.socketPath}`));
        else resolve();
      });
    });
    let inode: number;
    try {
      inode = await restrictSocket(options.socketPath, SOCKET_MODE);
    } catch (err) {
      server.forceShutdown();
      throw asSnapblockError(err, `securing the data plane socket ${options.socketPath}`);
    }
    options.logger.info("data plane listening", { socket: options.socketPath });
    return new DataPlaneServer(server, options.socketPath, inode, options.logger);
  }

  /** Stops accepting calls; calls in flight (and holds) get graceMs, then are cancelled. */
  shutdown(graceMs = 10_000): Promise<void> {
    this.stopping ??= (async () => {
      let timer: NodeJS.Timeout | undefined;
      const graceful = new Promise<boolean>((resolve) => this.server.tryShutdown(() => resolve(true)));
      const timedOut = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), graceMs);
      });
      if (!(await Promise.race([graceful, timedOut]))) this.server.forceShutdown();
      clearTimeout(timer);
      await removeOwnSocket(this.socketPath, this.inode);
      this.logger.info("data plane stopped", { socket: this.socketPath });
    })();
    return this.stopping;
  }
}

function handlers(o: DataPlaneServerOptions) {
  const dp = o.dataPlane;
  const log = { logger: o.logger, service: "dataplane", statusOf: toEngineStatus };
  const quiet = { ...log, quiet: true };
  const named = (req: WireEngineNameRequest, scope: CallScope): string => {
    if (req.engineName === "") throw new SnapblockError("INVALID_ARGUMENT", "engine_name is required");
    scope.note({ volume: req.engineName });
    return req.engineName;
  };
  return {
    GetInfo: unary("GetInfo", quiet, async () => toWireInfo(await dp.info())),
    GetVolume: unary(
      "GetVolume",
      quiet,
      async (req: WireEngineNameRequest, scope): Promise<WireGetVolumeResponse> => {
        const v = await dp.getVolume(named(req, scope));
        return v === undefined
          ? { found: false, name: "", sizeBytes: 0, meta: {} }
          : { found: true, name: v.name, sizeBytes: v.sizeBytes, meta: v.meta };
      },
    ),
    UpdateVolumeMeta: unary("UpdateVolumeMeta", log, async (req: WireUpdateVolumeMetaRequest, scope) => {
      await dp.updateVolumeMeta(named(req, scope), req.meta);
      return {};
    }),
    Attach: unary("Attach", log, async (req: WireAttachRequest, scope): Promise<WireAttachment> =>
      toWireAttachment(
        await dp.attach({ engineName: named(req, scope), label: req.label || req.engineName }),
      ),
    ),
    Detach: unary("Detach", log, async (req: WireEngineNameRequest, scope) => {
      await dp.detach(named(req, scope));
      return {};
    }),
    FindAttachment: unary(
      "FindAttachment",
      quiet,
      async (req: WireFindAttachmentRequest, scope): Promise<WireFindAttachmentResponse> => {
        const a = await dp.find(named(req, scope), { probeIo: req.probeIo });
        return a === undefined
          ? { found: false, attachment: null }
          : { found: true, attachment: toWireAttachment(a) };
      },
    ),
    ListAttachments: unary("ListAttachments", quiet, async (): Promise<WireListAttachmentsResponse> => ({
      attachments: (await dp.attachments()).map(toWireFacts),
    })),
    RefreshSize: unary("RefreshSize", log, async (req: WireEngineNameRequest, scope) => ({
      sizeBytes: await dp.refreshSize(named(req, scope)),
    })),
    HoldVolume: serverStream("HoldVolume", log, (req: WireEngineNameRequest, scope, call) =>
      hold(dp, named(req, scope), call, o),
    ),
  };
}

/**
 * Holds the volume's exclusive section (no snapshot freeze) from the first message until the
 * caller cancels or its connection goes (a node plugin killed mid-unmount releases it too), or
 * maxHoldMs passes.
 */
async function* hold(
  dp: NodeDataPlane,
  engineName: string,
  call: ServerWritableStream<unknown, unknown>,
  o: DataPlaneServerOptions,
): AsyncIterable<{ held: boolean }> {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  call.once("cancelled", release);
  call.once("close", release);
  const limit = setTimeout(() => {
    o.logger.warn("released a volume hold after its time limit: snapshots may freeze it again", {
      volume: engineName,
      maxHoldMs: o.maxHoldMs ?? DEFAULT_MAX_HOLD_MS,
    });
    release();
  }, o.maxHoldMs ?? DEFAULT_MAX_HOLD_MS);
  try {
    let acquired!: () => void;
    const held = new Promise<void>((resolve) => (acquired = resolve));
    const section = dp.exclusive(engineName, () => {
      acquired();
      return released;
    });
    await Promise.race([held, released]);
    if (call.cancelled) return;
    yield { held: true };
    await released;
    await section;
  } finally {
    clearTimeout(limit);
    release();
  }
}
