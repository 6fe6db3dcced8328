import { once } from "node:events";
import tls from "node:tls";
import { SnapblockError, StatusError, asSnapblockError, isSnapblockError } from "../errors/index.js";
import type { LogFields, Logger } from "../log/index.js";
import { toGrpcStatus } from "../rpc/index.js";
import { authorize, type PullGrants } from "./engine-access.js";
import { refuseOtherAddressee } from "./call-addressee.js";
import { rebuildEngineError } from "./engine-status.js";
import { describeIdentity, identityOfCertificate } from "./engine-identity.js";
import {
  ENGINE_TLS_SERVER_NAME,
  nodeIdentityCheck,
  parseHostPort,
  readTls,
  type EngineTransportOptions,
} from "./engine-tls.js";
import { StreamReader } from "../streams/index.js";
import type { WireChunkData, WireReadChunksRequest } from "./engine-messages.js";
import { readChunkContents, type SnapshotOpener } from "./snapshot-chunks.js";

/**
 * The chunk channel: the bulk path of a cross-node pull (docs/cluster.md, "The chunk channel").
 * A pull moves every allocated chunk of a snapshot; through gRPC each 64 KiB chunk is a protobuf
 * message, HTTP/2 frames and grpc-js's reassembly, and that per-message work, not TLS or the
 * disk, held the pull near a fifth of what mutual TLS carries between two processes
 * (BENCHMARKS.md). The channel carries the same ReadChunks exchange as plain frames on a
 * connection to the same port, behind the same mutual TLS 1.3 handshake: the client offers this
 * ALPN protocol beside "h2", the engine service's TLS listener hands such connections here
 * instead of to gRPC, and the same authorization (a node the controller granted the snapshot)
 * and addressee check apply to every request. A node that predates the channel answers "h2" and
 * the client falls back to gRPC's ReadChunks.
 *
 * On the wire (integers big-endian): a request is a u32 length and that many bytes of JSON
 * `{"to", "name", "chunkSize", "chunks"}`; the answer is one frame per chunk, in the order
 * asked, then an END frame, or an ERROR frame (JSON `{"code", "status"?, "message"}`) that ends
 * it early. A frame is a 12-byte header (u8 kind, 3 bytes zero, u32 chunk, u32 payload length)
 * and its payload. One request at a time per connection; connections are kept and reused.
 */
export const CHUNK_CHANNEL_PROTOCOL = "snapblock-chunks/1";

/** Frame kinds. */
const Kind = { Data: 1, Hole: 2, End: 3, Error: 4 } as const;
type Kind = (typeof Kind)[keyof typeof Kind];

const HEADER_BYTES = 12;
/** Largest request (JSON with the chunk list): far above a pull's batch of 64 chunks. */
const MAX_REQUEST_BYTES = 1024 * 1024;
/** Most chunks one request may ask for. */
const MAX_REQUEST_CHUNKS = 65_536;
/** Largest payload of one frame: a chunk of the largest chunk size, or an error message. */
const MAX_FRAME_BYTES = 1024 * 1024;
/** Bytes a reader buffers before it stops reading the socket (TCP then holds the sender back). */
const READ_HIGH_WATER = 4 * 1024 * 1024;
const READER_OPTIONS = { highWaterMark: READ_HIGH_WATER };
/** Read buffers a server connection keeps for reuse (the read-ahead plus what is being sent). */
const FREE_BUFFERS = 16;
/** A server connection with no request for this long is closed. */
const SERVER_IDLE_MS = 5 * 60_000;
/** Connections one server serves at once, and per caller (a client opens at most 16 per node). */
const MAX_SERVER_CONNECTIONS = 256;
const MAX_CONNECTIONS_PER_PEER = 32;
/** A new server connection must send its first request within this time. */
const FIRST_REQUEST_MS = 10_000;
/** Connections a client opens to one node at most (more callers wait for one), and keeps idle. */
const CLIENT_MAX_CONNECTIONS = 16;
const CLIENT_MAX_IDLE = 8;
const CLIENT_IDLE_MS = 30_000;

const EMPTY = Buffer.alloc(0);

function header(kind: Kind, chunk: number, length: number): Buffer {
  const h = Buffer.allocUnsafe(HEADER_BYTES);
  h.writeUInt8(kind, 0);
  h.writeUIntBE(0, 1, 3);
  h.writeUInt32BE(chunk, 4);
  h.writeUInt32BE(length, 8);
  return h;
}

/**
 * Writes buffers as one unit; waits while the socket's buffer is full; fails once it closed.
 * `written` runs once the socket is done with the last buffer (it may be reused then).
 */
async function send(socket: tls.TLSSocket, parts: Buffer[], written?: () => void): Promise<void> {
  if (socket.destroyed) throw new SnapblockError("CLOSED", "the peer closed the chunk channel");
  socket.cork();
  let room = true;
  for (const p of parts) room = socket.write(p, p === parts.at(-1) ? written : undefined);
  socket.uncork();
  if (!room) {
    // Not events.once: a listener left on the event that did not come would pile up.
    await new Promise<void>((resolve) => {
      const done = (): void => {
        socket.off("drain", done);
        socket.off("close", done);
        resolve();
      };
      socket.on("drain", done);
      socket.on("close", done);
    });
    if (socket.destroyed) throw new SnapblockError("CLOSED", "the peer closed the chunk channel");
  }
}

function errorPayload(err: unknown): Buffer {
  const e = asSnapblockError(err, "reading chunks");
  return Buffer.from(
    JSON.stringify({
      code: e.code,
      ...(e instanceof StatusError ? { status: e.status } : {}),
      message: e.message,
    }),
  );
}

function errorFrom(payload: Buffer, where: string): SnapblockError {
  let parsed: { code?: unknown; status?: unknown; message?: unknown } = {};
  try {
    parsed = JSON.parse(payload.toString("utf8")) as typeof parsed;
  } catch {
    // not JSON: reported below as the peer's fault
  }
  const message = typeof parsed.message === "string" ? parsed.message : `${where} sent an unreadable error`;
  return (
    rebuildEngineError(parsed.code, parsed.status, message) ??
    new SnapblockError("INTERNAL", `${where} failed: ${message}`)
  );
}

/** A request as the client sends it: ReadChunks plus the node it is meant for. */
interface ChannelRequest extends WireReadChunksRequest {
  to: string;
}

function parseRequest(body: Buffer): ChannelRequest {
  let r: Partial<Record<keyof ChannelRequest, unknown>>;
  try {
    r = JSON.parse(body.toString("utf8")) as typeof r;
  } catch {
    throw new SnapblockError("INVALID_ARGUMENT", "a chunk channel request is not JSON");
  }
  if (typeof r !== "object" || r === null) {
    throw new SnapblockError("INVALID_ARGUMENT", "a chunk channel request must be a JSON object");
  }
  const { to, name, chunkSize, chunks } = r;
  if (typeof name !== "string" || name === "")
    throw new SnapblockError("INVALID_ARGUMENT", "a chunk channel request needs the snapshot's name");
  if (typeof to !== "string")
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      "a chunk channel request needs the node it is meant for (to)",
    );
  if (typeof chunkSize !== "number")
    throw new SnapblockError("INVALID_ARGUMENT", "a chunk channel request needs chunkSize");
  if (
    !Array.isArray(chunks) ||
    chunks.length > MAX_REQUEST_CHUNKS ||
    !chunks.every((c) => Number.isSafeInteger(c) && (c as number) >= 0 && (c as number) < 2 ** 32)
  ) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `a chunk channel request's chunks must be up to ${MAX_REQUEST_CHUNKS} chunk numbers`,
    );
  }
  return { to, name, chunkSize, chunks: chunks as number[] };
}

export interface ChunkChannelServerOptions {
  /** The node this engine service serves (requests meant for another are refused). */
  nodeId: string;
  snapshots?: SnapshotOpener;
  pullGrants?: PullGrants;
  logger: Logger;
}

/** The engine service's side: serves ReadChunks requests on connections the TLS listener hands it. */
export class ChunkChannelServer {
  private readonly sockets = new Set<tls.TLSSocket>();
  /** Open connections per caller identity. */
  private readonly perPeer = new Map<string, number>();
  private closed = false;

  constructor(private readonly o: ChunkChannelServerOptions) {}

  serve(socket: tls.TLSSocket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    const identity = identityOfCertificate(socket.getPeerCertificate());
    const peer = describeIdentity(identity);
    const mine = this.perPeer.get(peer) ?? 0;
    // Over a limit, the connection's requests are answered RESOURCE_EXHAUSTED (the client then
    // reads those chunks over gRPC) rather than dropped, which it could not tell from a failure.
    const refusal =
      this.sockets.size >= MAX_SERVER_CONNECTIONS
        ? `${MAX_SERVER_CONNECTIONS} chunk channel connections are open on this node`
        : mine >= MAX_CONNECTIONS_PER_PEER
          ? `${peer} has ${MAX_CONNECTIONS_PER_PEER} chunk channel connections open on this node`
          : undefined;
    this.sockets.add(socket);
    if (!refusal) this.perPeer.set(peer, mine + 1);
    socket.on("close", () => {
      this.sockets.delete(socket);
      if (refusal) return;
      const n = (this.perPeer.get(peer) ?? 1) - 1;
      if (n > 0) this.perPeer.set(peer, n);
      else this.perPeer.delete(peer);
    });
    socket.setNoDelay(true);
    // A connection that asks nothing soon is closed: a slot is not held for free.
    socket.setTimeout(FIRST_REQUEST_MS, () => socket.destroy());
    const reader = new StreamReader(socket, READER_OPTIONS);
    void this.run(socket, reader, identity, refusal).catch((err: unknown) => {
      this.o.logger.debug("chunk channel connection ended", { err });
      socket.destroy();
    });
  }

  /** Closes every connection (the engine service is stopping). */
  close(): void {
    this.closed = true;
    for (const s of this.sockets) s.destroy();
  }

  private async run(
    socket: tls.TLSSocket,
    reader: StreamReader,
    identity: ReturnType<typeof identityOfCertificate>,
    refusal: string | undefined,
  ): Promise<void> {
    for (;;) {
      // The caller closing the connection ends this loop (readExact: CLOSED, caught in serve).
      const head = await reader.readExact(4);
      const length = head.readUInt32BE(0);
      if (length === 0 || length > MAX_REQUEST_BYTES) {
        // Not a request of this protocol: nothing after it can be trusted to be framed.
        const payload = errorPayload(
          new SnapblockError(
            "INVALID_ARGUMENT",
            `a chunk channel request of ${length} bytes (at most ${MAX_REQUEST_BYTES})`,
          ),
        );
        await send(socket, [header(Kind.Error, 0, payload.length), payload]).catch(() => undefined);
        socket.destroy();
        return;
      }
      const body = await reader.readExact(length);
      if (refusal) {
        this.o.logger.warn("chunk channel refused a connection", {
          caller: describeIdentity(identity),
          reason: refusal,
        });
        const payload = errorPayload(new StatusError("RESOURCE_EXHAUSTED", `${refusal}; read over gRPC`));
        await send(socket, [header(Kind.Error, 0, payload.length), payload]).catch(() => undefined);
        socket.end();
        return;
      }
      socket.setTimeout(SERVER_IDLE_MS);
      await this.answer(socket, body, identity);
    }
  }

  private async answer(
    socket: tls.TLSSocket,
    body: Buffer,
    identity: ReturnType<typeof identityOfCertificate>,
  ): Promise<void> {
    const started = performance.now();
    const line: LogFields = {
      method: "ReadChunks",
      transport: "chunk-channel",
      caller: describeIdentity(identity),
    };
    let sent = 0;
    try {
      const request = parseRequest(body);
      Object.assign(line, { name: request.name, chunks: request.chunks.length });
      await authorize(
        "pull",
        { tls: true, identity },
        { method: "ReadChunks", snapshot: request.name },
        this.o.pullGrants,
      );
      refuseOtherAddressee(request.to, this.o.nodeId);
      if (!this.o.snapshots)
        throw new StatusError("UNIMPLEMENTED", "this engine service cannot stream snapshots");
      // Chunks are read into buffers the socket gave back: fresh 64 KiB buffers per chunk cost
      // the serving node more (allocation, page faults, garbage) than reading them.
      const cs = request.chunkSize;
      const free: Buffer[] = [];
      const take = (): Buffer => free.pop() ?? Buffer.allocUnsafeSlow(cs);
      for await (const item of readChunkContents(this.o.snapshots, request, take)) {
        if (item.hole) await send(socket, [header(Kind.Hole, item.chunk, 0)]);
        else {
          // item.data is the start of a buffer `take` handed out (a short last chunk is shorter).
          const whole = Buffer.from(item.data.buffer, item.data.byteOffset, cs);
          await send(socket, [header(Kind.Data, item.chunk, item.data.length), item.data], () => {
            if (free.length < FREE_BUFFERS) free.push(whole);
          });
        }
        sent++;
      }
      await send(socket, [header(Kind.End, 0, 0)]);
      this.o.logger.debug("engine call", { ...line, code: "OK", sent, durationMs: ms(started) });
    } catch (err) {
      const e = asSnapblockError(err, "reading chunks");
      const code = e instanceof StatusError ? e.status : e.code;
      const fields = { ...line, code, sent, durationMs: ms(started), err: e.message };
      // The reader went away (it stopped early, or its pull was stopped): nothing to report.
      if (socket.destroyed) {
        this.o.logger.debug("engine call ended by the caller", fields);
        throw e;
      }
      // As gRPC calls are logged (pkg/rpc): an expected refusal is information, the rest errors.
      if (toGrpcStatus(e).unexpected) this.o.logger.error("engine call failed unexpectedly", fields);
      else this.o.logger.info("engine call", fields);
      const payload = errorPayload(e);
      await send(socket, [header(Kind.Error, 0, payload.length), payload]);
    }
  }
}

function ms(since: number): number {
  return Math.round((performance.now() - since) * 1000) / 1000;
}

/** The node answered without the chunk channel (it predates it): use gRPC's ReadChunks. */
export class ChunkChannelUnsupported extends Error {
  override readonly name = "ChunkChannelUnsupported";
}

export interface ChunkChannelClientOptions {
  /** The node dialled (its certificate must name it; requests are addressed to it). */
  nodeId: string;
  /** "host:port" of its engine service. */
  address: string;
  /** This node's transport: TLS (the channel exists only behind mutual TLS). */
  transport: EngineTransportOptions;
  /** A request whose connection stays silent this long fails (default 60 s). */
  timeoutMs?: number;
}

interface Connection {
  socket: tls.TLSSocket;
  reader: StreamReader;
}

/** A node's side: reads chunks of snapshots another node holds, over pooled connections. */
export class ChunkChannelClient {
  private readonly idle: Connection[] = [];
  /** Connections open or being opened (idle ones included). */
  private open = 0;
  /** Callers waiting for a connection while CLIENT_MAX_CONNECTIONS are open. */
  private readonly waiting: (() => void)[] = [];
  private closed = false;
  private readonly where: string;

  constructor(private readonly o: ChunkChannelClientOptions) {
    this.where = `node ${o.nodeId} (engine service at ${o.address})`;
  }

  close(): void {
    this.closed = true;
    for (const c of this.idle.splice(0)) c.socket.destroy();
    for (const wake of this.waiting.splice(0)) wake();
  }

  private wakeOne(): void {
    this.waiting.shift()?.();
  }

  /**
   * The asked chunks, as gRPC's ReadChunks yields them. Throws ChunkChannelUnsupported before
   * yielding anything when the node answers without the channel.
   */
  async *readChunks(request: WireReadChunksRequest): AsyncGenerator<WireChunkData> {
    for (let attempt = 0; ; attempt++) {
      const { conn, reused } = await this.acquire();
      const state = { answered: false };
      try {
        yield* this.exchange(conn, request, state);
        return;
      } catch (err) {
        // A kept connection the node closed meanwhile (it restarted, or dropped idle ones)
        // fails before any answer: that is not the node being unavailable; once more, afresh.
        if (reused && !state.answered && attempt === 0 && isSnapblockError(err, "CLOSED")) continue;
        throw err;
      }
    }
  }

  private async *exchange(
    conn: Connection,
    request: WireReadChunksRequest,
    state: { answered: boolean },
  ): AsyncGenerator<WireChunkData> {
    const { socket, reader } = conn;
    let reusable = false;
    try {
      socket.ref();
      const body = Buffer.from(
        JSON.stringify({
          to: this.o.nodeId,
          name: request.name,
          chunkSize: request.chunkSize,
          chunks: request.chunks,
        }),
      );
      const length = Buffer.allocUnsafe(4);
      length.writeUInt32BE(body.length, 0);
      await send(socket, [length, body]);
      const read = (bytes: number): Promise<Buffer> =>
        reader.readExact(bytes).catch((err: unknown) => {
          throw isSnapblockError(err, "CLOSED")
            ? new SnapblockError("CLOSED", `${this.where} closed the chunk channel (${err.message})`, {
                cause: err,
              })
            : err;
        });
      for (;;) {
        const h = await read(HEADER_BYTES);
        state.answered = true;
        const kind: number = h.readUInt8(0);
        const chunk = h.readUInt32BE(4);
        const size = h.readUInt32BE(8);
        if (size > MAX_FRAME_BYTES)
          throw new SnapblockError("INTERNAL", `${this.where} sent a frame of ${size} bytes`);
        const payload = size > 0 ? await read(size) : EMPTY;
        if (kind === Kind.Data) yield { chunk, data: payload, hole: false };
        else if (kind === Kind.Hole) yield { chunk, data: EMPTY, hole: true };
        else if (kind === Kind.End) {
          reusable = reader.bufferedBytes === 0;
          return;
        } else if (kind === Kind.Error) {
          const err = errorFrom(payload, this.where);
          // A refused connection (the server's limits) is closed by the server: not kept.
          reusable =
            reader.bufferedBytes === 0 &&
            !(err instanceof StatusError && err.status === "RESOURCE_EXHAUSTED");
          throw err;
        } else
          throw new SnapblockError("INTERNAL", `${this.where} sent a frame of unknown kind ${String(kind)}`);
      }
    } catch (err) {
      if (err instanceof SnapblockError) throw err;
      throw new SnapblockError("CLOSED", `${this.where} is unavailable: ${(err as Error).message}`, {
        cause: err,
      });
    } finally {
      // A consumer that stopped early leaves the rest of the answer unread: that connection goes.
      if (reusable) this.release(conn);
      else socket.destroy();
    }
  }

  private release(conn: Connection): void {
    if (this.closed || this.idle.length >= CLIENT_MAX_IDLE || conn.socket.destroyed) {
      conn.socket.destroy();
      return;
    }
    conn.socket.setTimeout(CLIENT_IDLE_MS);
    conn.socket.unref();
    this.idle.push(conn);
    this.wakeOne();
  }

  private async acquire(): Promise<{ conn: Connection; reused: boolean }> {
    for (;;) {
      if (this.closed) throw new SnapblockError("CLOSED", `the chunk channel to ${this.where} is closed`);
      for (let c = this.idle.pop(); c; c = this.idle.pop()) {
        if (!c.socket.destroyed && !c.socket.readableEnded && c.reader.bufferedBytes === 0) {
          c.socket.setTimeout(this.o.timeoutMs ?? 60_000);
          return { conn: c, reused: true };
        }
        c.socket.destroy();
      }
      if (this.open < CLIENT_MAX_CONNECTIONS) break;
      // As many connections as one node gets from us: wait for one to come back or close.
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
    this.open++;
    try {
      const conn = await this.connect();
      conn.socket.once("close", () => {
        this.open--;
        this.wakeOne();
      });
      return { conn, reused: false };
    } catch (err) {
      this.open--;
      this.wakeOne();
      throw err;
    }
  }

  private async connect(): Promise<Connection> {
    const { tls: source } = this.o.transport;
    if (!source) throw new ChunkChannelUnsupported("the chunk channel needs mutual TLS");
    const pem = readTls(source);
    const { host, port } = parseHostPort(this.o.address);
    const timeoutMs = this.o.timeoutMs ?? 60_000;
    const socket = tls.connect({
      host,
      port,
      ca: pem.ca,
      cert: pem.cert,
      key: pem.key,
      minVersion: "TLSv1.3",
      ALPNProtocols: [CHUNK_CHANNEL_PROTOCOL, "h2"],
      servername: ENGINE_TLS_SERVER_NAME,
      checkServerIdentity: nodeIdentityCheck(this.o.address, this.o.nodeId),
    });
    // Before the reader exists: a failed handshake must not be an unhandled 'error'.
    const failed = once(socket, "error").then(([err]: unknown[]) => {
      throw err;
    });
    failed.catch(() => undefined);
    socket.setTimeout(timeoutMs, () =>
      socket.destroy(new SnapblockError("CLOSED", `${this.where} sent nothing for ${timeoutMs} ms`)),
    );
    try {
      await Promise.race([once(socket, "secureConnect"), failed]);
    } catch (err) {
      socket.destroy();
      throw new SnapblockError("CLOSED", `${this.where} is unavailable: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (socket.alpnProtocol !== CHUNK_CHANNEL_PROTOCOL) {
      socket.destroy();
      throw new ChunkChannelUnsupported(`${this.where} does not offer the chunk channel`);
    }
    socket.setNoDelay(true);
    const reader = new StreamReader(socket, READER_OPTIONS);
    return { socket, reader };
  }
}
