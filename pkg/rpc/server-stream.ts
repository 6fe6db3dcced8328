import { once } from "node:events";
import type { ServerWritableStream, handleServerStreamingCall } from "@grpc/grpc-js";
import type { LogFields } from "../log/index.js";
import { toGrpcStatus } from "./grpc-status.js";
import type { CallScope, UnaryOptions } from "./unary-call.js";

export type StreamHandler<Req, Res> = (
  request: Req,
  scope: CallScope,
  call: ServerWritableStream<Req, Res>,
) => AsyncIterable<Res>;

/**
 * Wraps a server-streaming handler the way unary() wraps a unary one: one log line per call,
 * the one status mapping, observer hooks. The handler yields messages; each is written with
 * backpressure (a slow receiver pauses the handler instead of making the server buffer the
 * whole answer), and a cancelled call stops the handler at its next yield.
 */
export function serverStream<Req, Res>(
  method: string,
  options: UnaryOptions,
  handler: StreamHandler<Req, Res>,
): handleServerStreamingCall<Req, Res> {
  const what = `${options.service ?? "csi"} call`;
  return (call) => {
    const started = performance.now();
    const fields: LogFields = {};
    const scope: CallScope = { note: (f) => Object.assign(fields, f) };
    let messages = 0;
    const seconds = (): number => (performance.now() - started) / 1000;
    const observe = (hook: () => void): void => {
      try {
        hook();
      } catch (err) {
        options.logger.error("call observer hook failed", { method, err });
      }
    };
    observe(() => options.observer?.callStarted?.({ method }));
    const run = async (): Promise<void> => {
      for await (const message of handler(call.request, scope, call)) {
        if (call.cancelled) return;
        messages++;
        if (!call.write(message)) await Promise.race([once(call, "drain"), once(call, "cancelled")]);
        if (call.cancelled) return;
      }
    };
    void run().then(
      () => {
        const line = { method, ...fields, messages, durationMs: Math.round(seconds() * 1e6) / 1000 };
        const code = call.cancelled ? "CANCELLED" : "OK";
        if (options.quiet) options.logger.debug(what, { ...line, code });
        else options.logger.info(what, { ...line, code });
        observe(() => options.observer?.callFinished?.({ method, code, seconds: seconds() }));
        if (!call.cancelled) call.end();
      },
      (err: unknown) => {
        const mapped = toGrpcStatus(err);
        const line = {
          method,
          ...fields,
          messages,
          durationMs: Math.round(seconds() * 1e6) / 1000,
          code: mapped.codeName,
          message: mapped.message,
        };
        if (mapped.unexpected) options.logger.error(`${what} failed unexpectedly`, { ...line, err });
        else options.logger.info(what, line);
        observe(() =>
          options.observer?.callFinished?.({ method, code: mapped.codeName, seconds: seconds() }),
        );
        call.emit("error", options.statusOf?.(err, mapped) ?? { code: mapped.code, details: mapped.message });
      },
    );
  };
}
