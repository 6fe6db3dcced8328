import type { BlockSizeConstraints } from "./block-size.js";
import {
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_NAME,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_SHUTDOWN,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  OPTION_HEADER_LENGTH,
} from "./constants.js";
import type { NbdLimits } from "./limits.js";
import { BASE_ALLOCATION_CONTEXT_ID, matchMetaContexts } from "./meta-context.js";
import type { NbdProtocolErrorKind } from "./observer.js";
import {
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeMetaContextReply,
  encodeOptionError,
  encodeOptionReply,
  encodeServerReply,
} from "./option-reply.js";
import {
  decodeString,
  parseInfoRequest,
  parseMetaContextRequest,
  parseOptionHeader,
} from "./option-parser.js";
import type { ReplyWriter } from "./reply-writer.js";
import type { ByteReader } from "../streams/index.js";
import type { Logger } from "../log/index.js";

/** What the handshake needs to know about an export. */
export interface NegotiableExport {
  readonly name: string;
  readonly description: string;
  /** Size now; a volume can grow between connections. */
  currentSize(): number;
  readonly blockSize: BlockSizeConstraints;
  /** proto.md "Transmission flags" for a client that did (or did not) negotiate structured replies. */
  transmissionFlags(negotiation: { structuredReplies: boolean }): number;
}

/** The exports reachable through one listener. */
export interface ExportCatalog<E extends NegotiableExport> {
  /** The export a client asks for by name; "" is the default export (proto.md "NBD_OPT_EXPORT_NAME"). */
  find(name: string): E | undefined;
  list(): readonly E[];
  /** True while the export is being stopped: options get NBD_REP_ERR_SHUTDOWN. */
  shuttingDown(): boolean;
}

export interface NegotiatedSession<E extends NegotiableExport> {
  export: E;
  structuredReplies: boolean;
  /** Set when base:allocation was selected for this export (proto.md "Metadata querying"). */
  baseAllocationContextId: number | undefined;
  transmissionFlags: number;
}

export type HandshakeOutcome<E extends NegotiableExport> =
  | { kind: "transmission"; session: NegotiatedSession<E> }
  | { kind: "closed"; reason: string }
  | { kind: "violation"; violation: NbdProtocolErrorKind; reason: string };

export interface HandshakeOptions<E extends NegotiableExport> {
  reader: ByteReader;
  writer: ReplyWriter;
  catalog: ExportCatalog<E>;
  limits: Pick<NbdLimits, "maxOptionBytes" | "maxOptionsPerConnection">;
  logger: Logger;
  /** Fields added to every log line (export, connection id). */
  logFields: Record<string, unknown>;
}

const KNOWN_CLIENT_FLAGS = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;
const EMPTY = Buffer.alloc(0);

/** Result of one option: keep haggling, or leave the handshake. */
type OptionStep<E extends NegotiableExport> = { kind: "continue" } | HandshakeOutcome<E>;
const CONTINUE = { kind: "continue" } as const;

/**
 * Fixed newstyle negotiation (proto.md "Handshake"), server side. Runs until the client enters
 * transmission (NBD_OPT_EXPORT_NAME, or NBD_OPT_GO answered with NBD_REP_ACK), aborts, or breaks
 * a MUST (then the caller hard-disconnects). Rejects with SnapblockError CLOSED if the client
 * goes away mid-handshake.
 */
export async function negotiate<E extends NegotiableExport>(
  options: HandshakeOptions<E>,
): Promise<HandshakeOutcome<E>> {
  return new Handshake(options).run();
}

class Handshake<E extends NegotiableExport> {
  private noZeroes = false;
  private structuredReplies = false;
  /** The export and context id chosen by the last NBD_OPT_SET_META_CONTEXT, if any. */
  private metaContext: { export: E; contextId: number } | undefined;
  private optionCount = 0;

  constructor(private readonly options: HandshakeOptions<E>) {}

  async run(): Promise<HandshakeOutcome<E>> {
    const { reader, writer, limits } = this.options;
    writer.send([encodeGreeting()]);

    // proto.md "Client flags": the server MUST drop the connection on flags it does not know.
    const clientFlags = (await reader.readExact(4)).readUInt32BE(0);
    if ((clientFlags & ~KNOWN_CLIENT_FLAGS) !== 0) {
      return violation("bad_client_flags", `unknown client flags 0x${clientFlags.toString(16)}`);
    }
    this.noZeroes = (clientFlags & NBD_FLAG_C_NO_ZEROES) !== 0;

    for (;;) {
      const header = parseOptionHeader(await reader.readExact(OPTION_HEADER_LENGTH));
      if (!header.magicOk) return violation("bad_option_magic", "option does not start with IHAVEOPT");
      this.optionCount += 1;
      if (this.optionCount > limits.maxOptionsPerConnection) {
        // proto.md "Termination of the session during option haggling": a server MAY hard
        // disconnect a client whose behaviour amounts to denial of service.
        return violation("too_many_options", `more than ${limits.maxOptionsPerConnection} options`);
      }
      if (header.length > limits.maxOptionBytes) {
        // NBD_OPT_EXPORT_NAME cannot be answered with an error (proto.md), so it ends the session.
        if (header.option === NBD_OPT_EXPORT_NAME) {
          return violation("option_too_long", `export name of ${header.length} bytes`);
        }
        await reader.discard(header.length);
        this.replyError(
          header.option,
          NBD_REP_ERR_TOO_BIG,
          `option data of ${header.length} bytes is too long`,
        );
        continue;
      }
      const data = header.length === 0 ? EMPTY : await reader.readExact(header.length);
      this.debug("nbd option", { option: header.option, length: header.length });
      const step = this.handleOption(header.option, data);
      if (step.kind !== "continue") return step;
    }
  }

  private handleOption(option: number, data: Buffer): OptionStep<E> {
    if (option === NBD_OPT_ABORT) {
      // proto.md "NBD_OPT_ABORT": the server MUST reply with NBD_REP_ACK; data is ignored.
      this.options.writer.send([encodeOptionReply(option, NBD_REP_ACK)]);
      return { kind: "closed", reason: "client aborted the handshake" };
    }
    if (this.options.catalog.shuttingDown()) {
      // proto.md: a server being shut down SHOULD error options other than ABORT with ERR_SHUTDOWN.
      if (option === NBD_OPT_EXPORT_NAME) return { kind: "closed", reason: "server is shutting down" };
      this.replyError(option, NBD_REP_ERR_SHUTDOWN, "the export is being stopped");
      return CONTINUE;
    }
    switch (option) {
      case NBD_OPT_EXPORT_NAME:
        return this.exportName(data);
      case NBD_OPT_LIST:
        return this.list(option, data);
      case NBD_OPT_INFO:
      case NBD_OPT_GO:
        return this.infoOrGo(option, data);
      case NBD_OPT_STRUCTURED_REPLY:
        return this.structuredReply(option, data);
      case NBD_OPT_LIST_META_CONTEXT:
      case NBD_OPT_SET_META_CONTEXT:
        return this.metaContextOption(option, data);
      case NBD_OPT_STARTTLS:
        // proto.md "NOTLS mode": answer STARTTLS with ERR_POLICY or ERR_UNSUP.
        this.replyError(
          option,
          NBD_REP_ERR_UNSUP,
          "TLS is not supported; exports listen on owner-only sockets",
        );
        return CONTINUE;
      default:
        // proto.md "Baseline": unknown options get NBD_REP_ERR_UNSUP, and parsing goes on.
        this.replyError(option, NBD_REP_ERR_UNSUP, `option ${option} is not supported`);
        return CONTINUE;
    }
  }

  /** proto.md "NBD_OPT_EXPORT_NAME": no way to report an error, so failure ends the session. */
  private exportName(data: Buffer): OptionStep<E> {
    const name = decodeString(data, "export name");
    if (!name.ok) return violation("unknown_export", name.message);
    const chosen = this.options.catalog.find(name.value);
    if (chosen === undefined)
      return violation("unknown_export", `no export named ${JSON.stringify(name.value)}`);
    const session = this.session(chosen);
    this.options.writer.send([
      encodeExportNameReply(chosen.currentSize(), session.transmissionFlags, this.noZeroes),
    ]);
    return { kind: "transmission", session };
  }

  /** proto.md "NBD_OPT_LIST": one NBD_REP_SERVER per export, then NBD_REP_ACK. */
  private list(option: number, data: Buffer): OptionStep<E> {
    if (data.length !== 0) {
      this.replyError(option, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
      return CONTINUE;
    }
    const replies = this.options.catalog.list().map((e) => encodeServerReply(option, e.name, e.description));
    this.options.writer.send([...replies, encodeOptionReply(option, NBD_REP_ACK)]);
    return CONTINUE;
  }

  /**
   * proto.md "NBD_OPT_INFO and NBD_OPT_GO": NBD_INFO_EXPORT always, NAME and DESCRIPTION when
   * asked, BLOCK_SIZE always (our maximum is tighter than the default, and the spec allows
   * unrequested information), then NBD_REP_ACK; after GO's ACK transmission starts at once.
   */
  private infoOrGo(option: number, data: Buffer): OptionStep<E> {
    const request = parseInfoRequest(data);
    if (!request.ok) {
      this.replyError(option, NBD_REP_ERR_INVALID, request.message);
      return CONTINUE;
    }
    const chosen = this.options.catalog.find(request.value.name);
    if (chosen === undefined) {
      this.replyError(option, NBD_REP_ERR_UNKNOWN, `no export named ${JSON.stringify(request.value.name)}`);
      return CONTINUE;
    }
    const session = this.session(chosen);
    const replies = [encodeInfoExport(option, chosen.currentSize(), session.transmissionFlags)];
    if (request.value.infoTypes.includes(NBD_INFO_NAME)) {
      replies.push(encodeInfoString(option, NBD_INFO_NAME, chosen.name));
    }
    if (request.value.infoTypes.includes(NBD_INFO_DESCRIPTION) && chosen.description !== "") {
      replies.push(encodeInfoString(option, NBD_INFO_DESCRIPTION, chosen.description));
    }
    replies.push(encodeInfoBlockSize(option, chosen.blockSize));
    replies.push(encodeOptionReply(option, NBD_REP_ACK));
    this.options.writer.send(replies);
    return option === NBD_OPT_GO ? { kind: "transmission", session } : CONTINUE;
  }

  /** proto.md "NBD_OPT_STRUCTURED_REPLY": no data; a repeat is harmless, so it is acknowledged too. */
  private structuredReply(option: number, data: Buffer): OptionStep<E> {
    if (data.length !== 0) {
      this.replyError(option, NBD_REP_ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data");
      return CONTINUE;
    }
    this.structuredReplies = true;
    this.options.writer.send([encodeOptionReply(option, NBD_REP_ACK)]);
    return CONTINUE;
  }

  /** proto.md "NBD_OPT_LIST_META_CONTEXT" and "NBD_OPT_SET_META_CONTEXT". */
  private metaContextOption(option: number, data: Buffer): OptionStep<E> {
    const setting = option === NBD_OPT_SET_META_CONTEXT;
    // SET replaces the previous selection even when it fails.
    if (setting) this.metaContext = undefined;
    if (!this.structuredReplies) {
      this.replyError(option, NBD_REP_ERR_INVALID, "negotiate NBD_OPT_STRUCTURED_REPLY first");
      return CONTINUE;
    }
    const request = parseMetaContextRequest(data);
    if (!request.ok) {
      this.replyError(option, NBD_REP_ERR_INVALID, request.message);
      return CONTINUE;
    }
    const chosen = this.options.catalog.find(request.value.exportName);
    if (chosen === undefined) {
      this.replyError(
        option,
        NBD_REP_ERR_UNKNOWN,
        `no export named ${JSON.stringify(request.value.exportName)}`,
      );
      return CONTINUE;
    }
    const contexts = matchMetaContexts(request.value.queries, setting ? "set" : "list");
    // LIST replies carry id 0 (reserved); SET replies carry the id BLOCK_STATUS will use.
    const replies = contexts.map((name) =>
      encodeMetaContextReply(option, setting ? BASE_ALLOCATION_CONTEXT_ID : 0, name),
    );
    if (setting && contexts.length > 0) {
      this.metaContext = { export: chosen, contextId: BASE_ALLOCATION_CONTEXT_ID };
    }
    this.options.writer.send([...replies, encodeOptionReply(option, NBD_REP_ACK)]);
    return CONTINUE;
  }

  private session(chosen: E): NegotiatedSession<E> {
    return {
      export: chosen,
      structuredReplies: this.structuredReplies,
      // proto.md: BLOCK_STATUS needs SET_META_CONTEXT for the same export that is finally chosen.
      baseAllocationContextId: this.metaContext?.export === chosen ? this.metaContext.contextId : undefined,
      transmissionFlags: chosen.transmissionFlags({ structuredReplies: this.structuredReplies }),
    };
  }

  private replyError(option: number, replyType: number, message: string): void {
    this.debug("nbd option refused", { option, replyType: replyType >>> 0, message });
    this.options.writer.send([encodeOptionError(option, replyType, message)]);
  }

  private debug(message: string, fields: Record<string, unknown>): void {
    this.options.logger.debug(message, { ...this.options.logFields, ...fields });
  }
}

function violation<E extends NegotiableExport>(
  kind: NbdProtocolErrorKind,
  reason: string,
): HandshakeOutcome<E> {
  return { kind: "violation", violation: kind, reason };
}
