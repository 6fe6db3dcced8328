import type { ServerUnaryCall, ServiceError, handleUnaryCall } from "@grpc/grpc-js";
import type { LogFields, Logger } from "../log/index.js";
import { toGrpcStatus, type MappedStatus } from "./grpc-status.js";

/** What a handler can add to its call's log line (ids it resolved, the caller's identity). */
export interface CallScope {
  note(fields: LogFields): void;
}

export type UnaryHandler<Req, Res> = (
  request: Req,
  scope: CallScope,
  call: ServerUnaryCall<Req, Res>,
) => Promise<Res>;

/**
 * Hooks for metrics (pkg/metrics implements them; no Prometheus library here). Called
 * synchronously once per call; a hook that throws is logged and otherwise ignored, so a metrics
 * bug never fails an RPC.
 */
export interface CallObserver {
  callStarted?(event: { method: string }): void;
  /** `code` is the gRPC status code name ("OK", "NOT_FOUND", ...). */
  callFinished?(event: { method: string; code: string; seconds: number }): void;
}

export interface UnaryOptions {
  logger: Logger;
  /** The service, for the log line: "csi call", "engine call". */
  service?: string;
  /** Log successes at debug level (polled calls: Probe, capabilities, info). */
  quiet?: boolean;
  observer?: CallObserver;
  /**
   * The status sent for a failure, from the one mapping (toGrpcStatus); a service may add
   * trailing metadata (the engine service sends the engine's error code along).
   */
  statusOf?: (err: unknown, mapped: MappedStatus) => Partial<ServiceError>;
}

/**
 * Wraps one handler as a grpc-js unary call. Every RPC of every snapblock service goes through
 * here, so every RPC is logged the same way (one JSON line: method, the fields the handler noted,
 * duration, result code) and every failure is mapped by toGrpcStatus, the one error-to-status
 * mapping. The request itself is never logged: it may carry secrets (CSI spec "Secrets
 * Requirements") and mount flags.
 */
export function unary<Req, Res>(
  method: string,
  options: UnaryOptions,
  handler: UnaryHandler<Req, Res>,
): handleUnaryCall<Req, Res> {
  const what = `${options.service ?? "csi"} call`;
  return (call, callback) => {
    const started = performance.now();
    const fields: LogFields = {};
    const scope: CallScope = { note: (f) => Object.assign(fields, f) };
    const durationMs = (): number => Math.round((performance.now() - started) * 1000) / 1000;
    const observe = (hook: () => void): void => {
      try {
        hook();
      } catch (err) {
        options.logger.error("call observer hook failed", { method, err });
      }
    };
    const finished = (code: string): void =>
      observe(() =>
        options.observer?.callFinished?.({ method, code, seconds: (performance.now() - started) / 1000 }),
      );
    observe(() => options.observer?.callStarted?.({ method }));
    // An async wrapper turns a synchronous throw of the handler into a rejection as well.
    const pending = (async () => handler(call.request, scope, call))();
    void pending.then(
      (response) => {
        const line = { method, ...fields, durationMs: durationMs(), code: "OK" };
        if (options.quiet) options.logger.debug(what, line);
        else options.logger.info(what, line);
        finished("OK");
        callback(null, response);
      },
      (err: unknown) => {
        const mapped = toGrpcStatus(err);
        const line = {
          method,
          ...fields,
          durationMs: durationMs(),
          code: mapped.codeName,
          message: mapped.message,
        };
        if (mapped.unexpected) options.logger.error(`${what} failed unexpectedly`, { ...line, err });
        else options.logger.info(what, line);
        finished(mapped.codeName);
        const status = options.statusOf?.(err, mapped) ?? { code: mapped.code, details: mapped.message };
        callback(status, null);
      },
    );
  };
}
