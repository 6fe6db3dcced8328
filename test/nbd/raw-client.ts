/**
 * A deliberately independent, hand-written NBD client for protocol tests. It shares no code with
 * pkg/nbd except the public types: constants are spelled out again here from proto.md so that a
 * mistake in the server's constants cannot hide behind the same mistake in the client. Replies
 * are checked against the spec's MUSTs as they are parsed (chunk bounds, overlaps, DONE, block
 * status lengths), so every test using this client is also a conformance check.
 */
import net from "node:net";

export const MAGIC = {
  NBDMAGIC: 0x4e42444d41474943n,
  IHAVEOPT: 0x49484156454f5054n,
  REPLY: 0x0003e889045565a9n,
  REQUEST: 0x25609513,
  SIMPLE: 0x67446698,
  STRUCTURED: 0x668e33ef,
} as const;

export const OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
} as const;

export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 2 ** 31 + 1,
  ERR_POLICY: 2 ** 31 + 2,
  ERR_INVALID: 2 ** 31 + 3,
  ERR_UNKNOWN: 2 ** 31 + 6,
  ERR_SHUTDOWN: 2 ** 31 + 7,
  ERR_TOO_BIG: 2 ** 31 + 9,
} as const;

export const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

export const CMD = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;

export const CMD_FLAG = { FUA: 1, NO_HOLE: 2, DF: 4, REQ_ONE: 8, FAST_ZERO: 16 } as const;

export const TFLAG = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_FAST_ZERO: 1 << 11,
} as const;

export const ERRNO = {
  EPERM: 1,
  EIO: 5,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

export const REPLY_TYPE = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: 2 ** 15 + 1,
} as const;

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export interface ExportDetails {
  size: number;
  flags: number;
  infos: OptionReply[];
}

export interface Request {
  type: number;
  flags?: number;
  offset: number;
  length: number;
  payload?: Buffer;
  /** Default: a fresh handle. */
  handle?: bigint;
}

export interface Chunk {
  flags: number;
  type: number;
  payload: Buffer;
}

export interface Reply {
  handle: bigint;
  structured: boolean;
  /** First error seen (simple error field or structured error chunk); 0 on success. */
  error: number;
  errorMessage?: string;
  /** READ data reassembled (holes as zeroes). */
  data?: Buffer;
  chunks: Chunk[];
  /** BLOCK_STATUS descriptors by context id. */
  status?: Map<number, Array<{ length: number; flags: number }>>;
}

interface Pending {
  request: Required<Omit<Request, "payload">>;
  resolve: (reply: Reply) => void;
  reject: (err: Error) => void;
  reply: Reply;
  covered: Array<[number, number]>;
}

export class RawNbdClient {
  readonly socket: net.Socket;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: { bytes: number; resolve: () => void } | undefined;
  private ended = false;
  private nextHandle = 1n;
  private readonly pending = new Map<bigint, Pending>();
  private pump: Promise<void> | undefined;
  structured = false;
  /** Set on protocol mistakes found in server replies. */
  violations: string[] = [];
  readonly closed: Promise<void>;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      if (this.waiter !== undefined && this.buffered >= this.waiter.bytes) {
        const waiter = this.waiter;
        this.waiter = undefined;
        waiter.resolve();
      }
    });
    this.closed = new Promise<void>((resolve) => {
      const onEnd = (): void => {
        this.ended = true;
        const waiter = this.waiter;
        this.waiter = undefined;
        waiter?.resolve();
        resolve();
      };
      socket.on("end", onEnd);
      socket.on("close", onEnd);
    });
    socket.on("error", () => undefined);
  }

  static connect(address: string | { host: string; port: number }): Promise<RawNbdClient> {
    return new Promise((resolve, reject) => {
      const socket =
        typeof address === "string"
          ? net.connect({ path: address, allowHalfOpen: true })
          : net.connect({ host: address.host, port: address.port, allowHalfOpen: true });
      socket.once("connect", () => resolve(new RawNbdClient(socket)));
      socket.once("error", reject);
    });
  }

  get isEnded(): boolean {
    return this.ended;
  }

  write(data: Buffer): void {
    this.socket.write(data);
  }

  async read(bytes: number): Promise<Buffer> {
    while (this.buffered < bytes) {
      if (this.ended) throw new Error(`connection closed with ${this.buffered}/${bytes} bytes buffered`);
      await new Promise<void>((resolve) => {
        this.waiter = { bytes, resolve };
      });
    }
    const all = Buffer.concat(this.chunks);
    this.chunks = [all.subarray(bytes)];
    this.buffered -= bytes;
    return all.subarray(0, bytes);
  }

  /** Resolves true if the server closes the connection within `ms`. */
  async closesWithin(ms: number): Promise<boolean> {
    const timeout = new Promise<boolean>((resolve) => setTimeout(() => resolve(false), ms));
    return Promise.race([this.closed.then(() => true), timeout]);
  }

  destroy(): void {
    this.socket.destroy();
  }

  // Handshake ---------------------------------------------------------------------------------

  /** Reads the greeting and sends client flags (default: FIXED_NEWSTYLE | NO_ZEROES). */
  async handshake(clientFlags = 3): Promise<{ handshakeFlags: number }> {
    const greeting = await this.read(18);
    if (greeting.readBigUInt64BE(0) !== MAGIC.NBDMAGIC) throw new Error("bad NBDMAGIC");
    if (greeting.readBigUInt64BE(8) !== MAGIC.IHAVEOPT) throw new Error("bad IHAVEOPT");
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(clientFlags >>> 0);
    this.write(flags);
    return { handshakeFlags: greeting.readUInt16BE(16) };
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0), declaredLength = data.length): void {
    const header = Buffer.alloc(16);
    header.writeBigUInt64BE(MAGIC.IHAVEOPT, 0);
    header.writeUInt32BE(option >>> 0, 8);
    header.writeUInt32BE(declaredLength >>> 0, 12);
    this.write(Buffer.concat([header, data]));
  }

  async readOptionReply(): Promise<OptionReply> {
    const header = await this.read(20);
    if (header.readBigUInt64BE(0) !== MAGIC.REPLY) throw new Error("bad option reply magic");
    const length = header.readUInt32BE(16);
    const data = length > 0 ? Buffer.from(await this.read(length)) : Buffer.alloc(0);
    return { option: header.readUInt32BE(8), type: header.readUInt32BE(12), data };
  }

  /** Sends an option and reads replies up to the final one (ACK or an error). */
  async option(option: number, data?: Buffer): Promise<OptionReply[]> {
    this.sendOption(option, data);
    const replies: OptionReply[] = [];
    for (;;) {
      const reply = await this.readOptionReply();
      if (reply.option !== option)
        this.violations.push(`reply for option ${reply.option} to option ${option}`);
      replies.push(reply);
      if (reply.type === REP.ACK || reply.type >= 2 ** 31) return replies;
    }
  }

  async structuredReply(): Promise<OptionReply[]> {
    const replies = await this.option(OPT.STRUCTURED_REPLY);
    if (replies.at(-1)?.type === REP.ACK) this.structured = true;
    return replies;
  }

  async setMetaContext(exportName: string, queries: string[]): Promise<OptionReply[]> {
    return this.option(OPT.SET_META_CONTEXT, encodeMetaContextRequest(exportName, queries));
  }

  /** NBD_OPT_INFO or NBD_OPT_GO; resolves with the export details or rejects with the error reply. */
  async info(
    option: typeof OPT.INFO | typeof OPT.GO,
    name: string,
    infoTypes: number[] = [],
  ): Promise<ExportDetails> {
    const replies = await this.option(option, encodeInfoRequest(name, infoTypes));
    const last = replies.at(-1);
    if (last === undefined || last.type !== REP.ACK) {
      throw Object.assign(new Error(`option ${option} failed: ${last?.data.toString() ?? ""}`), {
        replyType: last?.type,
      });
    }
    const exportInfo = replies.find((r) => r.type === REP.INFO && r.data.readUInt16BE(0) === INFO.EXPORT);
    if (exportInfo === undefined) throw new Error("no NBD_INFO_EXPORT before ACK");
    return {
      size: Number(exportInfo.data.readBigUInt64BE(2)),
      flags: exportInfo.data.readUInt16BE(10),
      infos: replies.filter((r) => r.type === REP.INFO),
    };
  }

  /** The usual modern sequence: handshake, structured replies, base:allocation, GO. */
  static async open(
    path: string | { host: string; port: number },
    options: { name?: string; structured?: boolean; metaContext?: boolean } = {},
  ): Promise<{ client: RawNbdClient; details: ExportDetails }> {
    const client = await RawNbdClient.connect(path);
    await client.handshake();
    const name = options.name ?? "";
    if (options.structured ?? true) {
      await client.structuredReply();
      if (options.metaContext ?? true) await client.setMetaContext(name, ["base:allocation"]);
    }
    const details = await client.info(OPT.GO, name, [INFO.BLOCK_SIZE]);
    return { client, details };
  }

  // Transmission ------------------------------------------------------------------------------

  /** Sends a request; the returned promise resolves with its complete (validated) reply. */
  send(request: Request): Promise<Reply> {
    const handle = request.handle ?? this.nextHandle++;
    const header = Buffer.alloc(28);
    header.writeUInt32BE(MAGIC.REQUEST, 0);
    header.writeUInt16BE(request.flags ?? 0, 4);
    header.writeUInt16BE(request.type, 6);
    header.writeBigUInt64BE(handle, 8);
    header.writeBigUInt64BE(BigInt(request.offset), 16);
    header.writeUInt32BE(request.length >>> 0, 24);
    const promise = new Promise<Reply>((resolve, reject) => {
      if (request.type !== CMD.DISC) {
        this.pending.set(handle, {
          request: {
            type: request.type,
            flags: request.flags ?? 0,
            offset: request.offset,
            length: request.length,
            handle,
          },
          resolve,
          reject,
          reply: { handle, structured: false, error: 0, chunks: [] },
          covered: [],
        });
      } else {
        resolve({ handle, structured: false, error: 0, chunks: [] });
      }
    });
    this.write(request.payload === undefined ? header : Buffer.concat([header, request.payload]));
    this.pump ??= this.readReplies();
    return promise;
  }

  readAt(offset: number, length: number, flags = 0): Promise<Reply> {
    return this.send({ type: CMD.READ, offset, length, flags });
  }

  writeAt(offset: number, payload: Buffer, flags = 0): Promise<Reply> {
    return this.send({ type: CMD.WRITE, offset, length: payload.length, payload, flags });
  }

  async disconnect(): Promise<void> {
    await this.send({ type: CMD.DISC, offset: 0, length: 0 });
    this.socket.end();
  }

  get outstanding(): number {
    return this.pending.size;
  }

  private async readReplies(): Promise<void> {
    try {
      while (!this.ended || this.buffered > 0) {
        if (this.pending.size === 0 && this.buffered === 0) {
          await new Promise<void>((resolve) => {
            this.waiter = { bytes: 1, resolve };
          });
          continue;
        }
        await this.readOneMessage();
      }
    } catch (err) {
      for (const pending of this.pending.values()) pending.reject(err as Error);
      this.pending.clear();
    } finally {
      this.pump = undefined;
      for (const pending of this.pending.values())
        pending.reject(new Error("connection closed before the reply"));
      this.pending.clear();
    }
  }

  private async readOneMessage(): Promise<void> {
    const magic = (await this.read(4)).readUInt32BE(0);
    if (magic === MAGIC.SIMPLE) {
      const rest = await this.read(12);
      const error = rest.readUInt32BE(0);
      const handle = rest.readBigUInt64BE(4);
      const pending = this.takePending(handle);
      pending.reply.error = error;
      if (pending.request.type === CMD.READ && this.structured)
        this.violations.push("simple reply to a READ");
      if (pending.request.type === CMD.READ && error === 0) {
        pending.reply.data = Buffer.from(await this.read(pending.request.length));
      }
      pending.resolve(pending.reply);
      return;
    }
    if (magic !== MAGIC.STRUCTURED) throw new Error(`bad reply magic 0x${magic.toString(16)}`);
    if (!this.structured) this.violations.push("structured reply without negotiation");
    const rest = await this.read(16);
    const chunk: Chunk = {
      flags: rest.readUInt16BE(0),
      type: rest.readUInt16BE(2),
      payload: Buffer.alloc(0),
    };
    const handle = rest.readBigUInt64BE(4);
    const length = rest.readUInt32BE(12);
    chunk.payload = length > 0 ? Buffer.from(await this.read(length)) : Buffer.alloc(0);
    const pending = this.pending.get(handle);
    if (pending === undefined) throw new Error(`reply for unknown handle ${handle}`);
    pending.reply.structured = true;
    pending.reply.chunks.push(chunk);
    this.checkChunk(pending, chunk);
    if ((chunk.flags & 1) !== 0) {
      this.pending.delete(handle);
      this.finishStructured(pending);
      pending.resolve(pending.reply);
    }
  }

  private takePending(handle: bigint): Pending {
    const pending = this.pending.get(handle);
    if (pending === undefined) throw new Error(`reply for unknown handle ${handle}`);
    this.pending.delete(handle);
    return pending;
  }

  /** proto.md "Structured reply types" MUSTs, checked chunk by chunk. */
  private checkChunk(pending: Pending, chunk: Chunk): void {
    const { request, reply } = pending;
    const v = (message: string): void => void this.violations.push(`handle ${request.handle}: ${message}`);
    const within = (offset: number, length: number): boolean =>
      offset >= request.offset && offset + length <= request.offset + request.length;
    const cover = (offset: number, length: number): void => {
      for (const [start, len] of pending.covered) {
        if (offset < start + len && start < offset + length)
          v(`chunk ${offset}+${length} overlaps an earlier one`);
      }
      pending.covered.push([offset, length]);
    };
    switch (chunk.type) {
      case REPLY_TYPE.NONE:
        if (chunk.payload.length !== 0) v("NONE chunk with payload");
        if ((chunk.flags & 1) === 0) v("NONE chunk without DONE");
        break;
      case REPLY_TYPE.OFFSET_DATA: {
        if (request.type !== CMD.READ) v("OFFSET_DATA for a non-read");
        if (chunk.payload.length < 9) v("OFFSET_DATA shorter than 9");
        const offset = Number(chunk.payload.readBigUInt64BE(0));
        const data = chunk.payload.subarray(8);
        if (!within(offset, data.length)) v(`OFFSET_DATA ${offset}+${data.length} outside the request`);
        cover(offset, data.length);
        reply.data ??= Buffer.alloc(request.length);
        data.copy(reply.data, offset - request.offset);
        break;
      }
      case REPLY_TYPE.OFFSET_HOLE: {
        if (request.type !== CMD.READ) v("OFFSET_HOLE for a non-read");
        if ((request.flags & CMD_FLAG.DF) !== 0) v("OFFSET_HOLE despite DF");
        if (chunk.payload.length !== 12) v("OFFSET_HOLE length is not 12");
        const offset = Number(chunk.payload.readBigUInt64BE(0));
        const size = chunk.payload.readUInt32BE(8);
        if (size === 0) v("OFFSET_HOLE of size 0");
        if (!within(offset, size)) v(`OFFSET_HOLE ${offset}+${size} outside the request`);
        cover(offset, size);
        reply.data ??= Buffer.alloc(request.length);
        break;
      }
      case REPLY_TYPE.BLOCK_STATUS: {
        if (request.type !== CMD.BLOCK_STATUS) v("BLOCK_STATUS chunk for another command");
        if (chunk.payload.length < 12 || (chunk.payload.length - 4) % 8 !== 0) v("bad BLOCK_STATUS length");
        const id = chunk.payload.readUInt32BE(0);
        const descriptors: Array<{ length: number; flags: number }> = [];
        for (let p = 4; p + 8 <= chunk.payload.length; p += 8) {
          descriptors.push({
            length: chunk.payload.readUInt32BE(p),
            flags: chunk.payload.readUInt32BE(p + 4),
          });
        }
        if (descriptors.some((d) => d.length === 0)) v("zero-length descriptor");
        if ((request.flags & CMD_FLAG.REQ_ONE) !== 0) {
          if (descriptors.length !== 1) v("REQ_ONE reply with several descriptors");
          if ((descriptors[0]?.length ?? 0) > request.length) v("REQ_ONE descriptor longer than the request");
        } else {
          const allButLast = descriptors.slice(0, -1).reduce((sum, d) => sum + d.length, 0);
          if (allButLast >= request.length && descriptors.length > 1) v("descriptors beyond the request");
        }
        reply.status ??= new Map();
        if (reply.status.has(id)) v("two BLOCK_STATUS chunks for one context");
        reply.status.set(id, descriptors);
        break;
      }
      default:
        if ((chunk.type & 0x8000) !== 0) {
          if (chunk.payload.length < 6) v("error chunk shorter than 6");
          const error = chunk.payload.readUInt32BE(0);
          const messageLength = chunk.payload.readUInt16BE(4);
          if (error === 0) v("error chunk with error 0");
          if (messageLength > chunk.payload.length - 6) v("error message longer than the chunk");
          if (reply.error === 0) {
            reply.error = error;
            reply.errorMessage = chunk.payload.subarray(6, 6 + messageLength).toString();
          }
        } else {
          v(`unknown chunk type ${chunk.type}`);
        }
    }
  }

  private finishStructured(pending: Pending): void {
    const { request, reply } = pending;
    if (request.type === CMD.READ && reply.error === 0) {
      const total = pending.covered.reduce((sum, [, len]) => sum + len, 0);
      if (total !== request.length) {
        this.violations.push(
          `handle ${request.handle}: read chunks cover ${total} of ${request.length} bytes`,
        );
      }
      if ((request.flags & CMD_FLAG.DF) !== 0 && pending.covered.length > 1) {
        this.violations.push(`handle ${request.handle}: several content chunks despite DF`);
      }
      reply.data ??= Buffer.alloc(request.length);
    }
    if (request.type === CMD.BLOCK_STATUS && reply.error === 0 && reply.status === undefined) {
      this.violations.push(`handle ${request.handle}: successful BLOCK_STATUS without a status chunk`);
    }
  }
}

export function encodeInfoRequest(name: string, infoTypes: number[]): Buffer {
  const nameBytes = Buffer.from(name);
  const out = Buffer.alloc(4 + nameBytes.length + 2 + 2 * infoTypes.length);
  out.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(out, 4);
  out.writeUInt16BE(infoTypes.length, 4 + nameBytes.length);
  infoTypes.forEach((t, i) => out.writeUInt16BE(t, 4 + nameBytes.length + 2 + 2 * i));
  return out;
}

export function encodeMetaContextRequest(name: string, queries: string[]): Buffer {
  const parts: Buffer[] = [];
  const u32 = (n: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    return b;
  };
  const nameBytes = Buffer.from(name);
  parts.push(u32(nameBytes.length), nameBytes, u32(queries.length));
  for (const q of queries) {
    const qb = Buffer.from(q);
    parts.push(u32(qb.length), qb);
  }
  return Buffer.concat(parts);
}
