import { Metadata, status as GrpcCode, type ServiceError } from "@grpc/grpc-js";
import { SnapblockError, type ErrorCode } from "../errors/index.js";
import { CsiStatusError, toGrpcStatus, type CsiOnlyStatus, type MappedStatus } from "../csi/index.js";

/**
 * Errors across the engine service, both ways, in this one place. The server maps a thrown error
 * with pkg/csi's toGrpcStatus (the project's one error-to-status table) and also sends the
 * SnapblockError code in trailing metadata, because the table is not one-to-one (BUSY and
 * READ_ONLY are both FAILED_PRECONDITION, and the controller must tell BUSY apart). The client
 * rebuilds the same SnapblockError, so the controller sees what it would see in-process; a
 * transport failure (no connection, TLS refused, deadline) becomes CLOSED -> UNAVAILABLE naming
 * the node, so the CO retries and the operator knows which node to look at.
 */
const CODE_KEY = "snapblock-error-code";
const CSI_STATUS_KEY = "snapblock-csi-status";

const ERROR_CODES: ReadonlySet<string> = new Set<ErrorCode>([
  "INVALID_ARGUMENT",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "OUT_OF_RANGE",
  "NO_SPACE",
  "BUSY",
  "READ_ONLY",
  "CORRUPT",
  "CLOSED",
  "CANCELLED",
  "IO",
  "INTERNAL",
]);
const CSI_STATUSES: ReadonlySet<string> = new Set<CsiOnlyStatus>([
  "ABORTED",
  "UNIMPLEMENTED",
  "FAILED_PRECONDITION",
  "RESOURCE_EXHAUSTED",
]);

export interface EngineStatus {
  mapped: MappedStatus;
  error: Partial<ServiceError>;
}

/** Server side: a thrown error as the status to send. */
export function toEngineStatus(err: unknown): EngineStatus {
  const mapped = toGrpcStatus(err);
  const metadata = new Metadata();
  if (err instanceof SnapblockError) {
    metadata.set(CODE_KEY, err.code);
    if (err instanceof CsiStatusError) metadata.set(CSI_STATUS_KEY, err.csiStatus);
  }
  return { mapped, error: { code: mapped.code, details: mapped.message, metadata } };
}

export interface PeerRef {
  nodeId: string;
  address: string;
}

/** Client side: a failed call as the SnapblockError the engine raised (or a transport failure). */
export function fromEngineStatus(err: ServiceError, peer: PeerRef): SnapblockError {
  const code = first(err.metadata, CODE_KEY);
  const csiStatus = first(err.metadata, CSI_STATUS_KEY);
  const details = err.details || err.message;
  if (csiStatus !== undefined && CSI_STATUSES.has(csiStatus)) {
    return new CsiStatusError(csiStatus as CsiOnlyStatus, details, { cause: err });
  }
  if (code !== undefined && ERROR_CODES.has(code)) {
    return new SnapblockError(code as ErrorCode, details, { cause: err });
  }
  const where = `node ${peer.nodeId} (engine service at ${peer.address})`;
  if (TRANSPORT_FAILURES.has(err.code)) {
    return new SnapblockError("CLOSED", `${where} is unavailable: ${details}`, { cause: err });
  }
  if (err.code === GrpcCode.UNAUTHENTICATED || err.code === GrpcCode.PERMISSION_DENIED) {
    return new SnapblockError(
      "CLOSED",
      `${where} refused the controller's credentials (check the TLS Secret): ${details}`,
      { cause: err },
    );
  }
  if (err.code === GrpcCode.UNIMPLEMENTED) {
    return new CsiStatusError(
      "UNIMPLEMENTED",
      `${where} does not implement this call (is it an older snapblock?): ${details}`,
      { cause: err },
    );
  }
  return new SnapblockError("INTERNAL", `${where} failed: ${details}`, { cause: err });
}

/** Statuses without an engine code that mean "no answer from the node": the CO retries. */
const TRANSPORT_FAILURES: ReadonlySet<GrpcCode> = new Set([
  GrpcCode.UNAVAILABLE,
  GrpcCode.DEADLINE_EXCEEDED,
  GrpcCode.CANCELLED,
]);

function first(metadata: Metadata | undefined, key: string): string | undefined {
  const value = metadata?.get(key)[0];
  return typeof value === "string" ? value : undefined;
}
