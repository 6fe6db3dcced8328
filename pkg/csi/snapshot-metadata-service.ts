import type { UntypedServiceImplementation } from "@grpc/grpc-js";
import { SnapblockError } from "../errors/index.js";
import { invalidArgument, notFound } from "./request-errors.js";
import { locate, type Located } from "./controller-volumes.js";
import type { GetMetadataAllocatedRequest__Output } from "./generated/csi/v1/GetMetadataAllocatedRequest.js";
import type { GetMetadataAllocatedResponse } from "./generated/csi/v1/GetMetadataAllocatedResponse.js";
import type { GetMetadataDeltaRequest__Output } from "./generated/csi/v1/GetMetadataDeltaRequest.js";
import type { GetMetadataDeltaResponse } from "./generated/csi/v1/GetMetadataDeltaResponse.js";
import { serverStream, type CallObserver, type CallScope } from "../rpc/index.js";
import type { Logger } from "../log/index.js";
import type { EngineApi, EngineBlockMetadataPage } from "../engine-api/index.js";

export interface SnapshotMetadataOptions {
  engine: EngineApi;
  logger: Logger;
  /** Metrics hooks, called for every RPC. */
  observer?: CallObserver;
}

/**
 * Ranges per message when the CO leaves max_results at 0 ("the plugin will determine an
 * appropriate value"), and the most we send in one even when asked for more (CSI spec: the
 * plugin "is always free to send less than the requested value"): 16 bytes or so each, so a
 * message stays far below gRPC's 4 MiB default limit.
 */
export const DEFAULT_MAX_RESULTS = 1024;
export const MAX_RESULTS_CAP = 16_384;

type Response = GetMetadataAllocatedResponse & GetMetadataDeltaResponse;

/**
 * The CSI SnapshotMetadata service (changed-block tracking, CSI v1.12, alpha): which ranges of
 * a snapshot hold data, and which differ between two snapshots of one volume, streamed from the
 * engine of the node holding them page by page (a slow reader pauses the engine, nothing is
 * buffered whole). Each handler: validate -> delegate -> map. No operation lock: a listing
 * only reads, and one can last as long as a backup tool takes to read it; a snapshot deleted
 * meanwhile ends it with NOT_FOUND instead of blocking the delete.
 */
export function snapshotMetadataHandlers(options: SnapshotMetadataOptions): UntypedServiceImplementation {
  const log = { logger: options.logger, observer: options.observer };
  return {
    GetMetadataAllocated: serverStream<GetMetadataAllocatedRequest__Output, Response>(
      "GetMetadataAllocated",
      log,
      (req, scope) => allocated(options.engine, req, scope),
    ),
    GetMetadataDelta: serverStream<GetMetadataDeltaRequest__Output, Response>(
      "GetMetadataDelta",
      log,
      (req, scope) => delta(options.engine, req, scope),
    ),
  };
}

async function* allocated(
  engine: EngineApi,
  req: GetMetadataAllocatedRequest__Output,
  scope: CallScope,
): AsyncGenerator<Response> {
  // validate: required fields and their form first, existence second (CSI spec error tables).
  if (req.snapshotId === "") throw invalidArgument("snapshot_id is required");
  const startingOffset = checkOffset(req.startingOffset);
  const maxResults = checkMaxResults(req.maxResults);
  scope.note({ snapshotId: req.snapshotId, startingOffset });
  const target = await existing(engine, req.snapshotId, "snapshot_id");
  // delegate, map
  yield* responses(target.engine.blockMetadata({ snapshot: target.engineName, startingOffset, maxResults }));
}

async function* delta(
  engine: EngineApi,
  req: GetMetadataDeltaRequest__Output,
  scope: CallScope,
): AsyncGenerator<Response> {
  if (req.baseSnapshotId === "") throw invalidArgument("base_snapshot_id is required");
  if (req.targetSnapshotId === "") throw invalidArgument("target_snapshot_id is required");
  const startingOffset = checkOffset(req.startingOffset);
  const maxResults = checkMaxResults(req.maxResults);
  scope.note({ baseSnapshotId: req.baseSnapshotId, snapshotId: req.targetSnapshotId, startingOffset });
  const base = await existing(engine, req.baseSnapshotId, "base_snapshot_id");
  const target = await existing(engine, req.targetSnapshotId, "target_snapshot_id");
  // A snapshot lives on the node of its volume: two nodes are two volumes. The engine checks
  // the same on one node (a snapshot's lineage), with the same code.
  if (base.nodeId !== target.nodeId) {
    throw invalidArgument(
      `base_snapshot_id ${req.baseSnapshotId} and target_snapshot_id ${req.targetSnapshotId} are snapshots of different volumes; use GetMetadataAllocated for the target instead`,
    );
  }
  yield* responses(
    target.engine.blockMetadata({
      snapshot: target.engineName,
      baseSnapshot: base.engineName,
      startingOffset,
      maxResults,
    }),
  );
}

/** CSI spec: "Invalid starting_offset | 11 OUT_OF_RANGE" (negative, or past the volume's end). */
function checkOffset(offset: number): number {
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new SnapblockError(
      "OUT_OF_RANGE",
      `starting_offset ${offset} is negative; give 0, or the byte after the last range received`,
    );
  }
  return offset;
}

/** max_results: 0 lets the plugin choose; negative is an invalid argument. */
function checkMaxResults(maxResults: number): number {
  if (!Number.isInteger(maxResults) || maxResults < 0) {
    throw invalidArgument(`max_results ${maxResults} must be 0 (the plugin chooses) or positive`);
  }
  return maxResults === 0 ? DEFAULT_MAX_RESULTS : Math.min(maxResults, MAX_RESULTS_CAP);
}

/** The snapshot an id names, on its node's engine: NOT_FOUND for an id that names nothing. */
async function existing(engine: EngineApi, id: string, field: string): Promise<Located> {
  const found = locate(engine, id);
  if (!found || !(await found.engine.getSnapshot(found.engineName))) throw notFound("snapshot", id, field);
  return found;
}

/**
 * The engine's pages as CSI messages. Ranges are of variable length (whole chunks, 4 KiB blocks
 * of partly written chunks, adjacent ones merged): VARIABLE_LENGTH, the same in every message.
 */
async function* responses(pages: AsyncIterable<EngineBlockMetadataPage>): AsyncGenerator<Response> {
  for await (const page of pages) {
    yield {
      blockMetadataType: "VARIABLE_LENGTH",
      volumeCapacityBytes: page.sizeBytes,
      blockMetadata: page.ranges.map((r) => ({ byteOffset: r.offset, sizeBytes: r.length })),
    };
  }
}
