import { status, type ServiceError } from "@grpc/grpc-js";
import { callCsi, connectCsi, socketPathOf, type CsiClients } from "../pkg/csi/index.js";
import { OperatorClient } from "../pkg/operator/index.js";
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

/** A failed call, as a sentence for the person at the terminal (exit code 1). */
export class OperatorError extends Error {
  override readonly name = "OperatorError";

  /** The gRPC status code of the failed call. */
  constructor(
    message: string,
    readonly code: status,
  ) {
    super(message);
  }
}

/** Whether err is a call that failed with `code` (e.g. status.NOT_FOUND). */
export function failedWith(err: unknown, code: status): boolean {
  return err instanceof OperatorError && err.code === code;
}

function describe(err: ServiceError, socketPath: string, method: string): string {
  if (err.code === status.UNAVAILABLE) {
    return `cannot reach snapblock at ${socketPath}: ${err.details || "unavailable"} (is \`snapblock local\` running? set --endpoint or SNAPBLOCK_ENDPOINT)`;
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
