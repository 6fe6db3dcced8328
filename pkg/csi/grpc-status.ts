import { status as GrpcCode } from "@grpc/grpc-js";
import { isSnapblockError, type ErrorCode } from "../errors/index.js";
import { CsiStatusError, type CsiOnlyStatus } from "./csi-status-error.js";

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
 * errors become gRPC statuses (DESIGN.md section 5). The codes follow the CSI spec's error
 * tables: NO_SPACE is RESOURCE_EXHAUSTED ("out of capacity", CreateVolume/CreateSnapshot errors),
 * BUSY is FAILED_PRECONDITION ("volume in use", DeleteVolume/DeleteSnapshot errors), CLOSED is
 * UNAVAILABLE (the pool is opening or closing: the CO retries).
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

const CSI_ONLY: Record<CsiOnlyStatus, GrpcCode> = {
  ABORTED: GrpcCode.ABORTED,
  UNIMPLEMENTED: GrpcCode.UNIMPLEMENTED,
  FAILED_PRECONDITION: GrpcCode.FAILED_PRECONDITION,
  RESOURCE_EXHAUSTED: GrpcCode.RESOURCE_EXHAUSTED,
};

export function toGrpcStatus(err: unknown): MappedStatus {
  if (err instanceof CsiStatusError) {
    return {
      code: CSI_ONLY[err.csiStatus],
      codeName: err.csiStatus,
      message: err.message,
      unexpected: false,
    };
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
    message: "internal error in the snapblock CSI plugin; see the plugin log",
    unexpected: true,
  };
}
