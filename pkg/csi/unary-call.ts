import type { handleUnaryCall } from "@grpc/grpc-js";
import { toGrpcStatus } from "./grpc-status.js";
import type { CsiLogFields, CsiLogger } from "./logger.js";

/** What a handler can add to its call's log line (ids it resolved). */
export interface CallScope {
  note(fields: CsiLogFields): void;
}

export type UnaryHandler<Req, Res> = (request: Req, scope: CallScope) => Promise<Res>;

export interface UnaryOptions {
  logger: CsiLogger;
  /** Log successes at debug level (polled calls: Probe, capabilities, info). */
  quiet?: boolean;
}

/**
 * Wraps one CSI handler as a grpc-js unary call. Every RPC goes through here, so every RPC is
 * logged the same way (one JSON line: method, the ids the handler noted, duration, result code)
 * and every failure is mapped by toGrpcStatus, the one error-to-status mapping. The request
 * itself is never logged: it may carry secrets (CSI spec "Secrets Requirements") and mount flags.
 */
export function unary<Req, Res>(
  method: string,
  options: UnaryOptions,
  handler: UnaryHandler<Req, Res>,
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const started = performance.now();
    const fields: CsiLogFields = {};
    const scope: CallScope = { note: (f) => Object.assign(fields, f) };
    const durationMs = (): number => Math.round((performance.now() - started) * 1000) / 1000;
    // An async wrapper turns a synchronous throw of the handler into a rejection as well.
    const pending = (async () => handler(call.request, scope))();
    void pending.then(
      (response) => {
        const line = { method, ...fields, durationMs: durationMs(), code: "OK" };
        if (options.quiet) options.logger.debug("csi call", line);
        else options.logger.info("csi call", line);
        callback(null, response);
      },
      (err: unknown) => {
        const status = toGrpcStatus(err);
        const line = {
          method,
          ...fields,
          durationMs: durationMs(),
          code: status.codeName,
          message: status.message,
        };
        if (status.unexpected) options.logger.error("csi call failed unexpectedly", { ...line, err });
        else options.logger.info("csi call", line);
        callback({ code: status.code, details: status.message }, null);
      },
    );
  };
}
