import { performance } from "node:perf_hooks";
import { isSnapblockError } from "../errors/index.js";
import type { NbdBackend } from "./backend.js";
import type { BlockSizeConstraints } from "./block-size.js";
import { errorResult, executeRequest, type ExecutionResult } from "./command-executor.js";
import {
  commandName,
  errnoName,
  NBD_CMD_DISC,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_EIO,
  NBD_ESHUTDOWN,
  REQUEST_HEADER_LENGTH,
} from "./constants.js";
import type { NbdLimits } from "./limits.js";
import type { NbdObserver, NbdProtocolErrorKind } from "./observer.js";
import type { ReplyWriter } from "./reply-writer.js";
import { parseRequestHeader, type NbdRequest } from "./request-parser.js";
import { validateRequest, type RequestContext } from "./request-validator.js";
import { BufferPool, type ByteReader } from "../streams/index.js";
import type { Logger } from "../log/index.js";

/** What the transmission phase needs to know about the export it serves. */
export interface TransmissionExport {
  readonly name: string;
  readonly backend: NbdBackend;
  readonly readOnly: boolean;
  readonly blockSize: BlockSizeConstraints;
}

export interface TransmissionOptions {
  reader: ByteReader;
  writer: ReplyWriter;
  export: TransmissionExport;
  structuredReplies: boolean;
  baseAllocationContextId: number | undefined;
  limits: Pick<NbdLimits, "maxInFlightRequests" | "maxInFlightBytes" | "maxQueuedReplyBytes">;
  logger: Logger;
  logFields: Record<string, unknown>;
  observer: Required<NbdObserver>;
}

/** How the transmission phase ended; a violation means the caller hard-disconnects. */
export interface TransmissionEnd {
  reason: string;
  violation?: NbdProtocolErrorKind;
}

const EMPTY = Buffer.alloc(0);

/**
 * Write payloads and read data of every connection of the process, reused: a payload goes back
 * once its write settled (NbdBackend.write reads it only until then), read data once its reply
 * left for the socket. At most 32 MiB kept for reuse.
 */
const buffers = new BufferPool({
  minBytes: 4096,
  maxBytes: 32 * 1024 * 1024,
  maxKeptBytes: 32 * 1024 * 1024,
});
const takePayload = (bytes: number): Buffer => buffers.take(bytes);

/**
 * The transmission phase of one connection (proto.md "Transmission"). Requests are read one
 * after another and executed concurrently; each reply is written as soon as its request
 * completes, so replies may leave in any order (proto.md "Ordering of messages and writes").
 *
 * Flow control: the socket is read only while fewer than maxInFlightRequests requests and
 * maxInFlightBytes bytes are being executed and the client has taken all but
 * maxQueuedReplyBytes of our replies. Otherwise the socket stays paused and the client feels
 * backpressure; nothing grows without bound.
 */
export class Transmission {
  private inFlight = 0;
  private inFlightBytes = 0;
  private served = 0;
  private draining = false;
  /** Set while run() waits for the requests in flight to finish. */
  private whenIdle: (() => void) | undefined;
  private wakeReader: (() => void) | undefined;

  constructor(private readonly options: TransmissionOptions) {
    this.context = {
      size: 0,
      readOnly: options.export.readOnly,
      structuredReplies: options.structuredReplies,
      metaContextSelected: options.baseAllocationContextId !== undefined,
      minimumBlockSize: options.export.blockSize.minimum,
      maxPayloadBytes: options.export.blockSize.maximum,
    };
  }

  get inFlightRequests(): number {
    return this.inFlight;
  }

  get requestsServed(): number {
    return this.served;
  }

  /** Runs until the client disconnects, breaks the protocol, or drain() completes; then waits for in-flight requests. */
  async run(): Promise<TransmissionEnd> {
    let end: TransmissionEnd;
    try {
      end = await this.readRequests();
    } catch (err) {
      if (!isSnapblockError(err, "CLOSED")) throw err;
      end = { reason: err.message };
    }
    // proto.md "NBD_CMD_DISC": the server MUST handle all outstanding requests before closing.
    while (this.inFlight > 0) {
      await new Promise<void>((resolve) => {
        this.whenIdle = resolve;
      });
    }
    this.whenIdle = undefined;
    return end;
  }

  /**
   * Begins a clean stop: requests already executing complete and are answered, requests
   * arriving from now on get NBD_ESHUTDOWN (proto.md "Terminating the transmission phase"), and
   * once nothing is in flight the phase ends.
   */
  drain(): void {
    this.draining = true;
    this.stopIfDrained();
    this.wake();
  }

  private async readRequests(): Promise<TransmissionEnd> {
    const { reader } = this.options;
    for (;;) {
      // Requests that arrived together are parsed back to back without a promise each: the
      // waits below are taken only when capacity or bytes are really missing.
      if (!this.hasCapacity()) await this.waitForCapacity();
      if (this.draining && this.inFlight === 0) return { reason: "the export is being stopped" };
      const header = reader.tryTake(REQUEST_HEADER_LENGTH) ?? (await reader.readExact(REQUEST_HEADER_LENGTH));
      const parsed = parseRequestHeader(header);
      if (!parsed.ok) return { reason: parsed.reason, violation: "bad_request_magic" };
      const request = parsed.request;
      if (request.type === NBD_CMD_DISC) return { reason: "the client sent NBD_CMD_DISC" };

      const verdict = this.draining
        ? ({ ok: false, errno: NBD_ESHUTDOWN, message: "the export is being stopped" } as const)
        : validateRequest(request, this.requestContext());
      let payload: Buffer | undefined;
      if (request.type === NBD_CMD_WRITE) {
        // The payload follows the header whatever we think of the request; a refused write's
        // payload is consumed without being kept (bounded memory even for a 4 GiB length).
        if (!verdict.ok) await reader.discard(request.length);
        else if (request.length === 0) payload = EMPTY;
        else {
          payload =
            reader.tryTake(request.length, takePayload) ??
            (await reader.readExact(request.length, takePayload));
        }
      }
      if (!verdict.ok) {
        this.refuse(request, verdict.errno, verdict.message);
        continue;
      }
      this.dispatch(request, payload);
    }
  }

  /** One context object, refreshed per request (the size changes when the volume is expanded). */
  private readonly context: RequestContext;

  private requestContext(): RequestContext {
    this.context.size = this.options.export.backend.size;
    return this.context;
  }

  private refuse(request: NbdRequest, errno: number, message: string): void {
    const command = commandName(request.type);
    const { observer, export: exported } = this.options;
    this.debug("nbd request refused", {
      command,
      offset: request.offset,
      length: request.length,
      errno,
      message,
    });
    observer.requestStarted({ exportName: exported.name, command });
    this.options.writer.send(errorResult(request, errno, message, this.options.structuredReplies).frames);
    observer.requestCompleted({
      exportName: exported.name,
      command,
      error: errnoName(errno),
      bytes: 0,
      durationMs: 0,
    });
  }

  private dispatch(request: NbdRequest, payload: Buffer | undefined): void {
    const cost = request.type === NBD_CMD_READ || request.type === NBD_CMD_WRITE ? request.length : 0;
    this.inFlight += 1;
    this.inFlightBytes += cost;
    // execute() never rejects: it answers every failure itself.
    void this.execute(request, payload, cost);
  }

  /** One request from execution to reply and accounting, as a single promise. */
  private async execute(request: NbdRequest, payload: Buffer | undefined, cost: number): Promise<void> {
    const { observer, export: exported, writer, logger } = this.options;
    const command = commandName(request.type);
    observer.requestStarted({ exportName: exported.name, command });
    const started = performance.now();
    try {
      let result: ExecutionResult;
      try {
        result = await executeRequest(request, payload, {
          backend: exported.backend,
          exportName: exported.name,
          structuredReplies: this.options.structuredReplies,
          baseAllocationContextId: this.options.baseAllocationContextId,
          logger,
          readBuffers: buffers,
        });
      } catch (err) {
        // executeRequest maps every backend error itself; reaching here is a bug in this module.
        logger.error("nbd request failed unexpectedly", { ...this.options.logFields, command, err });
        result = errorResult(request, NBD_EIO, "internal server error", this.options.structuredReplies);
      }
      try {
        const { held } = result;
        writer.send(result.frames, held && (() => held.forEach((b) => buffers.give(b))));
        observer.requestCompleted({
          exportName: exported.name,
          command,
          error: result.errno === 0 ? null : errnoName(result.errno),
          bytes: result.bytes,
          durationMs: performance.now() - started,
        });
      } catch (err) {
        logger.error("nbd reply failed", { ...this.options.logFields, command, err });
      }
    } finally {
      // The backend is done with the payload (its write settled, or it never ran).
      if (payload !== undefined) buffers.give(payload);
      this.inFlight -= 1;
      this.inFlightBytes -= cost;
      this.served += 1;
      if (this.inFlight === 0) this.whenIdle?.();
      this.stopIfDrained();
      this.wake();
    }
  }

  private hasCapacity(): boolean {
    const { limits, writer } = this.options;
    return (
      this.draining ||
      (this.inFlight < limits.maxInFlightRequests &&
        this.inFlightBytes < limits.maxInFlightBytes &&
        writer.queuedBytes <= limits.maxQueuedReplyBytes)
    );
  }

  private async waitForCapacity(): Promise<void> {
    const { limits, writer } = this.options;
    while (
      !this.draining &&
      (this.inFlight >= limits.maxInFlightRequests || this.inFlightBytes >= limits.maxInFlightBytes)
    ) {
      await new Promise<void>((resolve) => {
        this.wakeReader = resolve;
      });
    }
    await writer.waitForDrain(limits.maxQueuedReplyBytes);
  }

  private wake(): void {
    const wake = this.wakeReader;
    this.wakeReader = undefined;
    wake?.();
  }

  /** When draining and idle, stop reading: the pending header read fails with CLOSED and run() returns. */
  private stopIfDrained(): void {
    if (this.draining && this.inFlight === 0) this.options.reader.stop("the export is being stopped");
  }

  private debug(message: string, fields: Record<string, unknown>): void {
    this.options.logger.debug(message, { ...this.options.logFields, ...fields });
  }
}
