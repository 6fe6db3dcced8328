import type { Duplex } from "node:stream";
import { isSnapblockError } from "../errors/index.js";
import { negotiate, type ExportCatalog, type NegotiableExport } from "./handshake.js";
import type { NbdLimits } from "./limits.js";
import type { NbdObserver, NbdProtocolErrorKind } from "./observer.js";
import { ReplyWriter } from "./reply-writer.js";
import { openReader, type ByteReader } from "../streams/index.js";
import { Transmission, type TransmissionExport } from "./transmission.js";
import type { Logger } from "../log/index.js";

export type NbdConnectionPhase = "handshake" | "transmission" | "closing" | "closed";

/** A connection as reported by NbdServer.listConnections(). */
export interface NbdConnectionInfo {
  id: number;
  exportName: string;
  /** "unix" for unix sockets, "address:port" for TCP. */
  peer: string;
  phase: NbdConnectionPhase;
  openedAt: Date;
  structuredReplies: boolean;
  inFlightRequests: number;
  requestsServed: number;
}

export type ServableExport = NegotiableExport & TransmissionExport;

export interface ConnectionOptions<E extends ServableExport> {
  id: number;
  stream: Duplex;
  peer: string;
  /** The export whose listener accepted the connection (for logs and metrics). */
  exportName: string;
  catalog: ExportCatalog<E>;
  limits: NbdLimits;
  logger: Logger;
  observer: Required<NbdObserver>;
}

/** Bytes read ahead of the protocol before the socket is paused (a few socket reads' worth). */
const READ_AHEAD_BYTES = 256 * 1024;

/**
 * One client connection: handshake, then transmission, then an orderly close. It owns its
 * socket; `closed` resolves once the socket is gone and every request it accepted has been
 * answered (or the client vanished).
 */
export class Connection<E extends ServableExport> {
  readonly id: number;
  readonly openedAt = new Date();
  readonly closed: Promise<void>;
  private phase: NbdConnectionPhase = "handshake";
  private structuredReplies = false;
  private transmission: Transmission | undefined;
  private drainRequested = false;
  private readonly reader: ByteReader;
  private readonly writer: ReplyWriter;
  private readonly logFields: Record<string, unknown>;

  constructor(private readonly options: ConnectionOptions<E>) {
    this.id = options.id;
    // The reader may take the socket over (a new object on the same connection): write through
    // the stream it gives back.
    const { reader, stream } = openReader(options.stream, { highWaterMark: READ_AHEAD_BYTES });
    this.reader = reader;
    this.writer = new ReplyWriter(stream);
    this.logFields = { export: options.exportName, connection: options.id, peer: options.peer };
    options.observer.connectionOpened({ exportName: options.exportName, connectionId: options.id });
    this.closed = this.lifecycle();
  }

  info(): NbdConnectionInfo {
    return {
      id: this.id,
      exportName: this.options.exportName,
      peer: this.options.peer,
      phase: this.phase,
      openedAt: this.openedAt,
      structuredReplies: this.structuredReplies,
      inFlightRequests: this.transmission?.inFlightRequests ?? 0,
      requestsServed: this.transmission?.requestsServed ?? 0,
    };
  }

  /**
   * Clean stop: a connection still negotiating has nothing in flight and is closed at once; one in
   * transmission finishes its in-flight requests first (see Transmission.drain).
   */
  drain(): void {
    this.drainRequested = true;
    if (this.transmission !== undefined) this.transmission.drain();
    else if (this.phase === "handshake") this.writer.destroy();
  }

  /** Hard disconnect: in-flight requests still run, but their replies are dropped. */
  destroy(): void {
    this.writer.destroy();
  }

  private async lifecycle(): Promise<void> {
    const { logger, observer, exportName, limits } = this.options;
    let reason = "closed";
    const handshakeTimer = setTimeout(() => {
      this.protocolError("handshake_timeout", `no transmission phase after ${limits.handshakeTimeoutMs} ms`);
      this.writer.destroy();
    }, limits.handshakeTimeoutMs);
    try {
      const outcome = await negotiate({
        reader: this.reader,
        writer: this.writer,
        catalog: this.options.catalog,
        limits,
        logger,
        logFields: this.logFields,
      });
      clearTimeout(handshakeTimer);
      if (outcome.kind === "violation") {
        this.protocolError(outcome.violation, outcome.reason);
        reason = outcome.reason;
      } else if (outcome.kind === "closed") {
        reason = outcome.reason;
      } else {
        const { session } = outcome;
        this.structuredReplies = session.structuredReplies;
        this.phase = "transmission";
        logger.debug("nbd transmission started", {
          ...this.logFields,
          structuredReplies: session.structuredReplies,
          flags: session.transmissionFlags,
        });
        this.transmission = new Transmission({
          reader: this.reader,
          writer: this.writer,
          export: session.export,
          structuredReplies: session.structuredReplies,
          baseAllocationContextId: session.baseAllocationContextId,
          limits,
          logger,
          logFields: this.logFields,
          observer,
        });
        if (this.drainRequested) this.transmission.drain();
        const end = await this.transmission.run();
        if (end.violation !== undefined) this.protocolError(end.violation, end.reason);
        reason = end.reason;
      }
    } catch (err) {
      if (isSnapblockError(err, "CLOSED")) {
        reason = err.message;
      } else {
        logger.error("nbd connection failed", { ...this.logFields, err });
        reason = "internal error";
      }
    } finally {
      clearTimeout(handshakeTimer);
    }
    this.phase = "closing";
    this.reader.stop(reason);
    await this.writer.close();
    this.phase = "closed";
    logger.debug("nbd connection closed", { ...this.logFields, reason });
    observer.connectionClosed({ exportName, connectionId: this.id, reason });
  }

  private protocolError(kind: NbdProtocolErrorKind, reason: string): void {
    this.options.logger.info("nbd protocol violation, disconnecting", { ...this.logFields, kind, reason });
    this.options.observer.protocolError({ exportName: this.options.exportName, connectionId: this.id, kind });
  }
}
