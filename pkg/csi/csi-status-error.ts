import { SnapblockError, type ErrorCode } from "../errors/index.js";

/**
 * CSI outcomes that no engine condition describes, so pkg/errors has no code for them:
 * - ABORTED: an operation is already pending for the volume or snapshot (CSI spec "Error Scheme"),
 *   or a page token is not (or no longer) valid (ListVolumes/ListSnapshots errors);
 * - UNIMPLEMENTED: the RPC or mode is not available in this plugin;
 * - FAILED_PRECONDITION: a protocol precondition the CO must fix (e.g. NodePublishVolume without
 *   staging_target_path while STAGE_UNSTAGE_VOLUME is advertised);
 * - RESOURCE_EXHAUSTED for placement: "unable to provision in accessible_topology" (CreateVolume).
 * They are still the one typed error of the project (a SnapblockError subclass); grpc-status.ts
 * maps them, in the same single place as the engine codes.
 */
export type CsiOnlyStatus = "ABORTED" | "UNIMPLEMENTED" | "FAILED_PRECONDITION" | "RESOURCE_EXHAUSTED";

const BASE_CODE: Record<CsiOnlyStatus, ErrorCode> = {
  ABORTED: "BUSY",
  UNIMPLEMENTED: "INTERNAL",
  FAILED_PRECONDITION: "INVALID_ARGUMENT",
  RESOURCE_EXHAUSTED: "NO_SPACE",
};

export class CsiStatusError extends SnapblockError {
  readonly csiStatus: CsiOnlyStatus;

  constructor(status: CsiOnlyStatus, message: string, options?: { cause?: unknown }) {
    super(BASE_CODE[status], message, options);
    this.csiStatus = status;
  }
}

/** Shorthand for the common INVALID_ARGUMENT raised by request validation. */
export function invalidArgument(message: string): SnapblockError {
  return new SnapblockError("INVALID_ARGUMENT", message);
}

/** NOT_FOUND for a volume or snapshot id that names nothing (CSI spec: "does not exist"). */
export function notFound(kind: "volume" | "snapshot", id: string, field?: string): SnapblockError {
  return new SnapblockError(
    "NOT_FOUND",
    `${field ? `${field}: ` : ""}${kind} ${JSON.stringify(id)} does not exist`,
  );
}
