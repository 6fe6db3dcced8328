import type { status } from "@grpc/grpc-js";

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
