import { SnapblockError, type ErrorCode } from "./snapblock-error.js";

/**
 * Outcomes of a call that no engine condition describes, so ErrorCode has no code for them:
 * - ABORTED: an operation is already pending for the volume or snapshot (CSI spec "Error Scheme"),
 *   or a page token is not (or no longer) valid (ListVolumes/ListSnapshots errors);
 * - UNIMPLEMENTED: the RPC or mode is not available in this plugin;
 * - FAILED_PRECONDITION: a protocol precondition the caller must fix (e.g. NodePublishVolume
 *   without staging_target_path while STAGE_UNSTAGE_VOLUME is advertised);
 * - RESOURCE_EXHAUSTED for placement: "unable to provision in accessible_topology" (CreateVolume);
 * - PERMISSION_DENIED: the caller's identity may not make this call (engine service).
 * They are still the one typed error of the project (a SnapblockError subclass); pkg/rpc maps
 * them, in the same single place as the engine codes.
 */
export const STATUS_ONLY = [
  "ABORTED",
  "UNIMPLEMENTED",
  "FAILED_PRECONDITION",
  "RESOURCE_EXHAUSTED",
  "PERMISSION_DENIED",
] as const;
export type StatusOnly = (typeof STATUS_ONLY)[number];

/** The nearest engine code, for code that only looks at SnapblockError.code. */
const BASE_CODE: Record<StatusOnly, ErrorCode> = {
  ABORTED: "BUSY",
  UNIMPLEMENTED: "INTERNAL",
  FAILED_PRECONDITION: "INVALID_ARGUMENT",
  RESOURCE_EXHAUSTED: "NO_SPACE",
  PERMISSION_DENIED: "INVALID_ARGUMENT",
};

export class StatusError extends SnapblockError {
  readonly status: StatusOnly;

  constructor(status: StatusOnly, message: string, options?: { cause?: unknown }) {
    super(BASE_CODE[status], message, options);
    this.status = status;
  }
}
