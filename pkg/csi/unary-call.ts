import type { handleUnaryCall } from "@grpc/grpc-js";
import { toGrpcStatus } from "./grpc-status.js";
import type { LogFields, Logger } from "../log/index.js";

/** What a handler can add to its call's log line (ids it resolved). */
export interface CallScope {
  note(fields: LogFields): void;
}

export type UnaryHandler<Req, Res> = (request: Req, scope: CallScope) => Promise<Res>;

/**
 * Hooks for metrics (pkg/metrics implements them; pkg/csi imports no Prometheus library). Called
 * synchronously once per call; a hook that throws is logged and otherwise ignored, so a metrics
 * bug never fails an RPC.
 */
export interface CsiCallObserver {
  callStarted?(event: { method: string }): void;
  /** `code` is the gRPC status code name ("OK", "NOT_FOUND", ...). */
  callFinished?(event: { method: string; code: string; seconds: number }): void;
}

export interface UnaryOptions {
  logger: Logger;
  /** Log successes at debug level (polled calls: Probe, capabilities, info). */
  quiet?: boolean;
  observer?: CsiCallObserver;
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
    const fields: LogFields = {};
    const scope: CallScope = { note: (f) => Object.assign(fields, f) };
    const durationMs = (): number => Math.round((performance.now() - started) * 1000) / 1000;
    const observe = (hook: () => void): void => {
      try {
        hook();
      } catch (err) {
        options.logger.error("csi observer hook failed", { method, err });
      }
    };
    const finished = (code: string): void =>
      observe(() =>
        options.observer?.callFinished?.({ method, code, seconds: (performance.now() - started) / 1000 }),
      );
    observe(() => options.observer?.callStarted?.({ method }));
    // An async wrapper turns a synchronous throw of the handler into a rejection as well.
    const pending = (async () => handler(call.request, scope))();
    void pending.then(
      (response) => {
        const line = { method, ...fields, durationMs: durationMs(), code: "OK" };
        if (options.quiet) options.logger.debug("csi call", line);
        else options.logger.info("csi call", line);
        finished("OK");
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
        finished(status.codeName);
        callback({ code: status.code, details: status.message }, null);
      },
    );
  };
}
