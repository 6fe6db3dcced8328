import { existsSync } from "node:fs";
import { status, type ServiceError } from "@grpc/grpc-js";
import { callCsi, connectCsi, socketPathOf, type CsiClients } from "../pkg/csi/index.js";
import { OperatorClient } from "../pkg/operator/index.js";
import { OperatorError } from "./operator-error.js";
import type { CliContext } from "./cli-context.js";
import { HELP_FLAG, type FlagSpec } from "./verb-spec.js";
import type { Output } from "./table-output.js";

/** Default socket of `snapblock local` started in the same directory. */
export const DEFAULT_DATA_DIR = "snapblock-data";
export const DEFAULT_ENDPOINT = `unix://${DEFAULT_DATA_DIR}/csi.sock`;

/** The flags every operator verb takes. */
export const OPERATOR_FLAGS = {
  endpoint: {
    type: "string",
    value: "EP",
    defaultText: `$SNAPBLOCK_ENDPOINT, else ${DEFAULT_ENDPOINT}`,
    help: "the socket of snapblock local",
  },
  json: { type: "boolean", default: false, help: "machine-readable output" },
  help: HELP_FLAG,
} as const satisfies Record<string, FlagSpec>;

/**
 * The operator CLI's connection to `snapblock local`: CSI over its socket, as the sidecars speak
 * it, and snapblock's operator service on the same socket (exports, volume states).
 */
export class OperatorConnection {
  readonly socketPath: string;
  private readonly clients: CsiClients;
  private operatorClient: OperatorClient | undefined;

  constructor(endpoint: string, cwd: string) {
    this.socketPath = socketPathOf(endpoint, cwd);
    this.clients = connectCsi(this.socketPath);
  }

  controller<Res>(method: string, request: object): Promise<Res> {
    return this.call(method, () => callCsi<Res>(this.clients.controller, method, request));
  }

  identity<Res>(method: string, request: object): Promise<Res> {
    return this.call(method, () => callCsi<Res>(this.clients.identity, method, request));
  }

  /** Node calls may make a filesystem or wait for a device: a long deadline. */
  node<Res>(method: string, request: object): Promise<Res> {
    return this.call(method, () => callCsi<Res>(this.clients.node, method, request, 600_000));
  }

  /** A call of the operator service (pkg/operator), named `method` in messages. */
  operator<Res>(method: string, run: (client: OperatorClient) => Promise<Res>): Promise<Res> {
    this.operatorClient ??= new OperatorClient(this.socketPath);
    const client = this.operatorClient;
    return this.call(method, () => run(client));
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
      const failure = err as ServiceError;
      throw new OperatorError(describe(failure, this.socketPath, method), failure.code);
    }
  }

  close(): void {
    this.clients.close();
    this.operatorClient?.close();
  }

  private async call<Res>(method: string, run: () => Promise<Res>): Promise<Res> {
    try {
      return await run();
    } catch (err) {
      const failure = err as ServiceError;
      throw new OperatorError(describe(failure, this.socketPath, method), failure.code);
    }
  }
}

function describe(err: ServiceError, socketPath: string, method: string): string {
  if (err.code === status.UNAVAILABLE) {
    const hint =
      "start `snapblock local` (npm start), or point --endpoint or SNAPBLOCK_ENDPOINT at its socket";
    if (!existsSync(socketPath)) return `no snapblock at ${socketPath} (no such socket): ${hint}`;
    return `cannot reach snapblock at ${socketPath}: ${err.details || "unavailable"}; ${hint}`;
  }
  if (err.code === status.UNIMPLEMENTED && /Operator/.test(err.details)) {
    return `${socketPath} does not serve snapblock's operator service (${method}): attach, export and volume states need \`snapblock local\` (set --endpoint or SNAPBLOCK_ENDPOINT to its socket)`;
  }
  const name = (status as unknown as Record<number, string>)[err.code] ?? String(err.code);
  return `${method} failed (${name}): ${err.details}`;
}

/** Runs one CLI command against the socket (--endpoint, $SNAPBLOCK_ENDPOINT or the default). */
export async function withConnection(
  ctx: CliContext,
  flags: { endpoint?: string | undefined; json: boolean },
  run: (conn: OperatorConnection, out: Output) => Promise<number>,
): Promise<number> {
  const conn = new OperatorConnection(
    flags.endpoint ?? ctx.env.SNAPBLOCK_ENDPOINT ?? DEFAULT_ENDPOINT,
    ctx.cwd,
  );
  const out: Output = { json: flags.json, write: ctx.stdout };
  try {
    return await run(conn, out);
  } finally {
    conn.close();
  }
}
