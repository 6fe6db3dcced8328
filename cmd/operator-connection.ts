import { status, type ServiceError } from "@grpc/grpc-js";
import { callCsi, connectCsi, socketPathOf, type CsiClients } from "../pkg/csi/index.js";
import type { CliContext } from "./cli-context.js";
import type { Output } from "./table-output.js";

/** Default socket of `snapblock local` started in the same directory. */
export const DEFAULT_DATA_DIR = "snapblock-data";
export const DEFAULT_ENDPOINT = `unix://${DEFAULT_DATA_DIR}/csi.sock`;

/** The options every operator verb takes (util.parseArgs form). */
export const OPERATOR_OPTIONS = {
  endpoint: { type: "string" },
  json: { type: "boolean", default: false },
  help: { type: "boolean", short: "h", default: false },
} as const;

/** The operator CLI's connection: CSI over the local plugin's socket, as the sidecars speak it. */
export class OperatorConnection {
  readonly socketPath: string;
  private readonly clients: CsiClients;

  constructor(endpoint: string, cwd: string) {
    this.socketPath = socketPathOf(endpoint, cwd);
    this.clients = connectCsi(this.socketPath);
  }

  controller<Res>(method: string, request: object): Promise<Res> {
    return this.call<Res>(this.clients.controller, method, request);
  }

  identity<Res>(method: string, request: object): Promise<Res> {
    return this.call<Res>(this.clients.identity, method, request);
  }

  /** A server-streaming SnapshotMetadata call, message by message as they arrive. */
  async *snapshotMetadata<Res>(method: string, request: object): AsyncGenerator<Res> {
    const client = this.clients.snapshotMetadata as unknown as Record<
      string,
      (r: object) => AsyncIterable<Res>
    >;
    try {
      yield* client[method]!.call(this.clients.snapshotMetadata, request);
    } catch (err) {
      throw new OperatorError(describe(err as ServiceError, this.socketPath, method));
    }
  }

  close(): void {
    this.clients.close();
  }

  private async call<Res>(
    client: CsiClients["controller"] | CsiClients["identity"],
    method: string,
    request: object,
  ): Promise<Res> {
    try {
      return await callCsi<Res>(client, method, request);
    } catch (err) {
      throw new OperatorError(describe(err as ServiceError, this.socketPath, method));
    }
  }
}

/** A failed call, as a sentence for the person at the terminal (exit code 1). */
export class OperatorError extends Error {
  override readonly name = "OperatorError";
}

function describe(err: ServiceError, socketPath: string, method: string): string {
  if (err.code === status.UNAVAILABLE) {
    return `cannot reach snapblock at ${socketPath}: ${err.details || "unavailable"} (is \`snapblock local\` running? set --endpoint or SNAPBLOCK_ENDPOINT)`;
  }
  const name = (status as unknown as Record<number, string>)[err.code] ?? String(err.code);
  return `${method} failed (${name}): ${err.details}`;
}

/** Runs one CLI command against the socket (--endpoint, $SNAPBLOCK_ENDPOINT or the default). */
export async function withConnection(
  ctx: CliContext,
  endpoint: string | undefined,
  run: (conn: OperatorConnection, out: Output) => Promise<number>,
  json?: boolean,
): Promise<number> {
  const conn = new OperatorConnection(endpoint ?? ctx.env.SNAPBLOCK_ENDPOINT ?? DEFAULT_ENDPOINT, ctx.cwd);
  const out: Output = { json: json ?? ctx.args.includes("--json"), write: ctx.stdout };
  try {
    return await run(conn, out);
  } finally {
    conn.close();
  }
}
