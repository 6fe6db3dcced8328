import type { NbdBackendExtent } from "./backend.js";
import { NBD_STATE_HOLE, NBD_STATE_ZERO } from "./constants.js";
import { coverRange } from "./extent-coverage.js";
import type { StatusDescriptor } from "./transmission-reply.js";

export interface BlockStatusOptions {
  /** NBD_CMD_FLAG_REQ_ONE: exactly one descriptor, no longer than the request. */
  reqOne: boolean;
  /** proto.md allows fewer descriptors than the whole range needs; this bounds the reply size. */
  maxDescriptors: number;
}

/**
 * base:allocation descriptors for a range (proto.md "`base:allocation` metadata context"): a hole
 * is NBD_STATE_HOLE|NBD_STATE_ZERO (our holes read as zeroes), allocated data is 0.
 */
export function buildBlockStatus(
  offset: number,
  length: number,
  extents: readonly NbdBackendExtent[],
  options: BlockStatusOptions,
): StatusDescriptor[] {
  const limit = options.reqOne ? 1 : Math.max(1, options.maxDescriptors);
  return coverRange(offset, length, extents)
    .slice(0, limit)
    .map((run) => ({ length: run.length, flags: run.allocated ? 0 : NBD_STATE_HOLE | NBD_STATE_ZERO }));
}
