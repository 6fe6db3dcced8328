import { status as GrpcCode } from "@grpc/grpc-js";
import { StatusError, isSnapblockError, type ErrorCode, type StatusOnly } from "../errors/index.js";

/** What a failed call returns: a gRPC status code and a message a person can act on. */
export interface MappedStatus {
  code: GrpcCode;
  /** Upper-case gRPC code name, for logs. */
  codeName: string;
  message: string;
  /** True when the error was not expected (INTERNAL): it is logged with its cause. */
  unexpected: boolean;
}

/**
 * SnapblockError code -> gRPC status. This table and toGrpcStatus() are the ONE place where
 * errors become gRPC statuses (every service: CSI and the engine service). The codes follow the
 * CSI spec's error tables: NO_SPACE is RESOURCE_EXHAUSTED ("out of capacity",
 * CreateVolume/CreateSnapshot errors), BUSY is FAILED_PRECONDITION ("volume in use",
 * DeleteVolume/DeleteSnapshot errors), CLOSED is UNAVAILABLE (the pool is opening or closing: the
 * caller retries).
 */
const BY_CODE: Record<ErrorCode, GrpcCode> = {
  INVALID_ARGUMENT: GrpcCode.INVALID_ARGUMENT,
  NOT_FOUND: GrpcCode.NOT_FOUND,
  ALREADY_EXISTS: GrpcCode.ALREADY_EXISTS,
  OUT_OF_RANGE: GrpcCode.OUT_OF_RANGE,
  NO_SPACE: GrpcCode.RESOURCE_EXHAUSTED,
  BUSY: GrpcCode.FAILED_PRECONDITION,
  READ_ONLY: GrpcCode.FAILED_PRECONDITION,
  CORRUPT: GrpcCode.INTERNAL,
  CLOSED: GrpcCode.UNAVAILABLE,
  CANCELLED: GrpcCode.ABORTED,
  IO: GrpcCode.INTERNAL,
  INTERNAL: GrpcCode.INTERNAL,
};

const BY_STATUS: Record<StatusOnly, GrpcCode> = {
  ABORTED: GrpcCode.ABORTED,
  UNIMPLEMENTED: GrpcCode.UNIMPLEMENTED,
  FAILED_PRECONDITION: GrpcCode.FAILED_PRECONDITION,
  RESOURCE_EXHAUSTED: GrpcCode.RESOURCE_EXHAUSTED,
  PERMISSION_DENIED: GrpcCode.PERMISSION_DENIED,
};

export function toGrpcStatus(err: unknown): MappedStatus {
  if (err instanceof StatusError) {
    return { code: BY_STATUS[err.status], codeName: err.status, message: err.message, unexpected: false };
  }
  if (isSnapblockError(err)) {
    const code = BY_CODE[err.code];
    return { code, codeName: GrpcCode[code], message: err.message, unexpected: code === GrpcCode.INTERNAL };
  }
  // Anything else is a bug or an unwrapped library error: never leak its text as-is (it may
  // contain paths or internals), but keep a short hint so the log line can be found.
  return {
    code: GrpcCode.INTERNAL,
    codeName: "INTERNAL",
    message: "internal error in snapblock; see the log of the process that answered",
    unexpected: true,
  };
}
