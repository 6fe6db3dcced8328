import { Metadata, status as GrpcCode, type ServiceError } from "@grpc/grpc-js";
import {
  ERROR_CODES,
  STATUS_ONLY,
  SnapblockError,
  StatusError,
  type ErrorCode,
  type StatusOnly,
} from "../errors/index.js";
import { toGrpcStatus, type MappedStatus } from "../rpc/index.js";

/**
 * Errors across the engine service, both ways, in this one place. The server maps a thrown error
 * with pkg/rpc's toGrpcStatus (the project's one error-to-status table) and also sends the
 * SnapblockError code in trailing metadata, because the table is not one-to-one (BUSY and
 * READ_ONLY are both FAILED_PRECONDITION, and the controller must tell BUSY apart). The client
 * rebuilds the same SnapblockError, so the controller sees what it would see in-process; a
 * transport failure (no connection, TLS refused, deadline) becomes CLOSED -> UNAVAILABLE naming
 * the node, so the CO retries and the operator knows which node to look at.
 */
const CODE_KEY = "snapblock-error-code";
// The key keeps its first name: nodes and controllers of different versions meet during upgrades.
const STATUS_KEY = "snapblock-csi-status";

const ENGINE_CODES: ReadonlySet<string> = new Set<string>(ERROR_CODES);
const STATUSES: ReadonlySet<string> = new Set<string>(STATUS_ONLY);

/**
 * Server side: the status sent for a thrown error (pkg/rpc's UnaryOptions.statusOf): the mapped
 * status, plus the engine's code in trailing metadata.
 */
export function toEngineStatus(
  err: unknown,
  mapped: MappedStatus = toGrpcStatus(err),
): Partial<ServiceError> {
  const metadata = new Metadata();
  if (err instanceof SnapblockError) {
    metadata.set(CODE_KEY, err.code);
    if (err instanceof StatusError) metadata.set(STATUS_KEY, err.status);
  }
  return { code: mapped.code, details: mapped.message, metadata };
}

export interface PeerRef {
  nodeId: string;
  address: string;
}

/**
 * The SnapblockError a peer's engine raised, from the code and status it sent (either transport),
 * or undefined when neither is one this version knows.
 */
export function rebuildEngineError(
  code: unknown,
  onlyStatus: unknown,
  message: string,
  cause?: unknown,
): SnapblockError | undefined {
  if (typeof onlyStatus === "string" && STATUSES.has(onlyStatus)) {
    return new StatusError(onlyStatus as StatusOnly, message, { cause });
  }
  if (typeof code === "string" && ENGINE_CODES.has(code)) {
    return new SnapblockError(code as ErrorCode, message, { cause });
  }
  return undefined;
}

/** Client side: a failed call as the SnapblockError the engine raised (or a transport failure). */
export function fromEngineStatus(err: ServiceError, peer: PeerRef): SnapblockError {
  const details = err.details || err.message;
  const rebuilt = rebuildEngineError(
    first(err.metadata, CODE_KEY),
    first(err.metadata, STATUS_KEY),
    details,
    err,
  );
  if (rebuilt) return rebuilt;
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
    return new StatusError(
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
