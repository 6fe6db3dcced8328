import type { Socket } from "node:net";
import { SnapblockError } from "../errors/index.js";
import type { NbdBackend } from "./backend.js";
import { computeBlockSize, type BlockSizeConstraints } from "./block-size.js";
import { Connection, type NbdConnectionInfo } from "./connection.js";
import {
  MAX_STRING_BYTES,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
} from "./constants.js";
import type { ExportCatalog } from "./handshake.js";
import type { NbdLimits } from "./limits.js";
import { Listener, type NbdBoundAddress, type NbdListenAddress } from "./listener.js";
import { exportUri } from "./nbd-uri.js";
import type { NbdObserver } from "./observer.js";
import type { Logger } from "../log/index.js";

export interface NbdExportOptions {
  backend: NbdBackend;
  /** A unix socket path (preferred), or a TCP host and port when explicitly wanted. */
  listen: NbdListenAddress;
  /** Export name; defaults to backend.name. Clients asking for "" get this export too. */
  name?: string;
  /** Shown by NBD_OPT_LIST and NBD_INFO_DESCRIPTION. */
  description?: string;
  /** Defaults to backend.readOnly. A read-only backend cannot be exported read-write. */
  readOnly?: boolean;
  /**
   * Advertise NBD_FLAG_CAN_MULTI_CONN. Correct whenever a flush on one connection makes the
   * completed writes of every connection durable, i.e. the backend's flush() is backend-wide
   * and the server keeps no per-connection cache; both hold for the engine. Default true.
   */
  multiConn?: boolean;
  /** 1 (byte-granular, default) or 512 (a client must align requests to 512-byte sectors). */
  minimumBlockSize?: 1 | 512;
}

export type NbdExportState = "serving" | "stopping" | "stopped";

export interface NbdExportInfo {
  name: string;
  description: string;
  readOnly: boolean;
  multiConn: boolean;
  /** Current size of the backend in bytes. */
  size: number;
  blockSize: BlockSizeConstraints;
  address: NbdBoundAddress;
  /** NBD URI for clients (nbdfuse, qemu, nbdcopy, fio). */
  uri: string;
  state: NbdExportState;
  connections: number;
  startedAt: Date;
}

export interface ServedExportContext {
  limits: NbdLimits;
  logger: Logger;
  observer: Required<NbdObserver>;
  nextConnectionId: () => number;
}

/**
 * One export: a backend served on its own listener. It is its own (single-entry) export catalog,
 * so a client may name it or ask for the default export "".
 */
export class ServedExport implements ExportCatalog<ServedExport> {
  readonly name: string;
  readonly description: string;
  readonly readOnly: boolean;
  readonly multiConn: boolean;
  readonly blockSize: BlockSizeConstraints;
  readonly startedAt = new Date();
  private state: NbdExportState = "serving";
  private listener: Listener | undefined;
  private readonly connections = new Set<Connection<ServedExport>>();
  private stopping: Promise<void> | undefined;

  private constructor(
    readonly backend: NbdBackend,
    private readonly options: NbdExportOptions,
    private readonly context: ServedExportContext,
  ) {
    this.name = options.name ?? backend.name;
    this.description = options.description ?? "";
    this.readOnly = options.readOnly ?? backend.readOnly;
    this.multiConn = options.multiConn ?? true;
    this.blockSize = computeBlockSize({
      minimum: options.minimumBlockSize ?? 1,
      chunkSize: backend.chunkSize,
      maxPayloadBytes: context.limits.maxPayloadBytes,
    });
  }

  /** Validates the options, binds the listener and starts accepting clients. */
  static async start(options: NbdExportOptions, context: ServedExportContext): Promise<ServedExport> {
    const served = new ServedExport(options.backend, options, context);
    served.validate();
    served.listener = await Listener.open({
      address: options.listen,
      onConnection: (socket, peer) => served.accept(socket, peer),
      logger: context.logger,
      logFields: { export: served.name },
    });
    context.logger.info("nbd export started", {
      export: served.name,
      uri: served.uri(),
      readOnly: served.readOnly,
    });
    context.observer.exportStarted({ exportName: served.name, readOnly: served.readOnly });
    return served;
  }

  get address(): NbdBoundAddress {
    if (this.listener === undefined) throw new SnapblockError("INTERNAL", "export has no listener");
    return this.listener.address;
  }

  uri(): string {
    return exportUri(this.address, this.name);
  }

  info(): NbdExportInfo {
    return {
      name: this.name,
      description: this.description,
      readOnly: this.readOnly,
      multiConn: this.multiConn,
      size: this.backend.size,
      blockSize: this.blockSize,
      address: this.address,
      uri: this.uri(),
      state: this.state,
      connections: this.connections.size,
      startedAt: this.startedAt,
    };
  }

  connectionInfo(): NbdConnectionInfo[] {
    return [...this.connections].map((connection) => connection.info());
  }

  // ExportCatalog and NegotiableExport ------------------------------------------------------

  find(name: string): ServedExport | undefined {
    return name === this.name || name === "" ? this : undefined;
  }

  list(): readonly ServedExport[] {
    return [this];
  }

  shuttingDown(): boolean {
    return this.state !== "serving";
  }

  currentSize(): number {
    return this.backend.size;
  }

  /** proto.md "Transmission flags": advertise exactly what this export implements. */
  transmissionFlags(negotiation: { structuredReplies: boolean }): number {
    let flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA;
    if (this.readOnly) flags |= NBD_FLAG_READ_ONLY;
    else flags |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
    // proto.md: SEND_DF MUST be clear unless structured replies were negotiated.
    if (negotiation.structuredReplies) flags |= NBD_FLAG_SEND_DF;
    if (this.multiConn) flags |= NBD_FLAG_CAN_MULTI_CONN;
    return flags;
  }

  // Lifecycle --------------------------------------------------------------------------------

  /**
   * Stops cleanly: no new connections, every request already accepted completes and is
   * answered (later ones get NBD_ESHUTDOWN), connections close, then the backend is flushed so
   * that everything ever acknowledged is durable. Connections that do not finish within
   * drainTimeoutMs are cut off; their unanswered requests were never acknowledged.
   */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    const { logger, observer, limits } = this.context;
    this.state = "stopping";
    // Drain at once: requests arriving from now on get ESHUTDOWN, however long the listener
    // takes to close. Connections accepted meanwhile see "stopping" and are drained below too.
    for (const connection of this.connections) connection.drain();
    await this.listener?.close();
    for (const connection of this.connections) connection.drain();
    const allClosed = Promise.all([...this.connections].map((connection) => connection.closed));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      allClosed.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), limits.drainTimeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      logger.warn("nbd export drain timed out; closing connections", {
        export: this.name,
        connections: this.connections.size,
      });
      for (const connection of this.connections) connection.destroy();
      await allClosed;
    }
    let flushError: unknown;
    if (!this.readOnly) {
      try {
        await this.backend.flush();
      } catch (err) {
        flushError = err;
      }
    }
    this.state = "stopped";
    observer.exportStopped({ exportName: this.name, readOnly: this.readOnly });
    if (flushError !== undefined) {
      logger.error("nbd export stopped but the final flush failed", { export: this.name, err: flushError });
      throw new SnapblockError("IO", `export ${this.name} stopped but its final flush failed`, {
        cause: flushError,
      });
    }
    logger.info("nbd export stopped", { export: this.name });
  }

  private accept(socket: Socket, peer: string): void {
    const { limits, logger, observer } = this.context;
    if (this.state !== "serving") {
      socket.destroy();
      return;
    }
    if (this.connections.size >= limits.maxConnectionsPerExport) {
      logger.warn("nbd connection refused: too many connections", { export: this.name, peer });
      observer.protocolError({ exportName: this.name, connectionId: 0, kind: "connection_limit" });
      socket.destroy();
      return;
    }
    const connection = new Connection<ServedExport>({
      id: this.context.nextConnectionId(),
      stream: socket,
      peer,
      exportName: this.name,
      catalog: this,
      limits,
      logger,
      observer,
    });
    this.connections.add(connection);
    logger.debug("nbd connection opened", { export: this.name, connection: connection.id, peer });
    // `closed` never rejects; the second handler is only there so nothing can go unhandled.
    void connection.closed.then(
      () => this.connections.delete(connection),
      (err: unknown) => {
        this.connections.delete(connection);
        logger.error("nbd connection teardown failed", { export: this.name, connection: connection.id, err });
      },
    );
  }

  private validate(): void {
    const { backend } = this;
    const nameBytes = Buffer.byteLength(this.name);
    if (nameBytes > MAX_STRING_BYTES || this.name.includes("\0")) {
      throw new SnapblockError(
        "INVALID_ARGUMENT",
        `export name must be at most 4096 UTF-8 bytes without NUL`,
      );
    }
    if (Buffer.byteLength(this.description) > MAX_STRING_BYTES) {
      throw new SnapblockError("INVALID_ARGUMENT", "export description must be at most 4096 UTF-8 bytes");
    }
    if (backend.readOnly && this.options.readOnly === false) {
      throw new SnapblockError(
        "INVALID_ARGUMENT",
        `${backend.name} is read-only and cannot be exported read-write`,
      );
    }
    if (!Number.isSafeInteger(backend.size) || backend.size < 0) {
      throw new SnapblockError("INVALID_ARGUMENT", `${backend.name} reports an invalid size ${backend.size}`);
    }
    const minimum = this.blockSize.minimum;
    if (backend.size % minimum !== 0) {
      throw new SnapblockError(
        "INVALID_ARGUMENT",
        `${backend.name} size ${backend.size} is not a multiple of the minimum block size ${minimum}`,
      );
    }
  }
}
