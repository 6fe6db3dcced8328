import { SnapblockError } from "../errors/index.js";
import type { NbdBackend } from "./backend.js";
import { buildBlockStatus } from "./block-status.js";
import {
  commandName,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_ENOTSUP,
} from "./constants.js";
import { mapBackendError } from "./error-mapping.js";
import { coverRange } from "./extent-coverage.js";
import type { NbdRequest } from "./request-parser.js";
import {
  encodeBlockStatus,
  encodeErrorReply,
  encodeOffsetData,
  encodeOffsetHole,
  encodeSimpleReply,
  encodeStructuredNone,
} from "./transmission-reply.js";
import type { Logger } from "../log/index.js";

export interface ExecutionContext {
  backend: NbdBackend;
  exportName: string;
  structuredReplies: boolean;
  /** Context id of base:allocation, when the client selected it. */
  baseAllocationContextId: number | undefined;
  logger: Logger;
  /** Where read data goes, when given: the result lists what it took (`held`). */
  readBuffers?: { take(bytes: number): Buffer; give(buffer: Buffer): void };
}

export interface ExecutionResult {
  /** The complete reply, to be written contiguously. */
  frames: Buffer[];
  /** 0 on success, else the wire errno sent. */
  errno: number;
  /** Payload bytes moved, for stats. */
  bytes: number;
  /** Buffers from `readBuffers` the frames point into: give them back once the frames are sent. */
  held?: Buffer[];
}

/** A reply bounded to ~512 KiB however fragmented the allocation map is. */
const MAX_STATUS_DESCRIPTORS = 65_536;
/** NO_HOLE zeroing writes real zeroes in pieces of this size, from one shared read-only buffer. */
const ZERO_PIECE = 1024 * 1024;
let zeroPiece: Buffer | undefined;

/**
 * Runs one validated request against the backend and builds its reply. Never rejects: backend
 * failures become error replies through mapBackendError, the single mapping point.
 */
export async function executeRequest(
  request: NbdRequest,
  payload: Buffer | undefined,
  context: ExecutionContext,
): Promise<ExecutionResult> {
  // Read buffers taken from context.readBuffers; a failed read's go back with the error reply.
  const held: Buffer[] = [];
  try {
    return await dispatch(request, payload, context, held);
  } catch (err) {
    const mapped = mapBackendError(err, {
      logger: context.logger,
      exportName: context.exportName,
      command: commandName(request.type),
      offset: request.offset,
      length: request.length,
    });
    return { ...errorResult(request, mapped.errno, mapped.message, context.structuredReplies), held };
  }
}

/** An error reply for a request refused before execution (validation, shutdown). */
export function errorResult(
  request: NbdRequest,
  errno: number,
  message: string,
  structured: boolean,
): ExecutionResult {
  return { frames: [encodeErrorReply(request.handle, errno, message, structured)], errno, bytes: 0 };
}

async function dispatch(
  request: NbdRequest,
  payload: Buffer | undefined,
  context: ExecutionContext,
  held: Buffer[],
): Promise<ExecutionResult> {
  const { backend } = context;
  const { offset, length, flags, handle } = request;
  const fua = (flags & NBD_CMD_FLAG_FUA) !== 0;
  switch (request.type) {
    case NBD_CMD_READ:
      return context.structuredReplies
        ? structuredRead(request, context, held)
        : simpleRead(request, context, held);
    case NBD_CMD_WRITE:
      if (length > 0) await backend.write(offset, payload ?? Buffer.alloc(0), { fua });
      return success(handle, length);
    case NBD_CMD_FLUSH:
      // proto.md "NBD_CMD_FLUSH": every write replied to before now must be durable. The
      // backend's flush covers every connection, which is what makes CAN_MULTI_CONN true.
      if (!backend.readOnly) await backend.flush();
      return success(handle, 0);
    case NBD_CMD_TRIM:
      if (length > 0) await backend.trim(offset, length, { fua });
      return success(handle, 0);
    case NBD_CMD_WRITE_ZEROES:
      return writeZeroes(request, context, fua);
    case NBD_CMD_CACHE:
      // proto.md "NBD_CMD_CACHE": a hint with no semantic effect; there is no cache to warm.
      return success(handle, 0);
    case NBD_CMD_BLOCK_STATUS:
      return blockStatus(request, context);
    default:
      throw new SnapblockError("INVALID_ARGUMENT", `command ${request.type} reached execution unvalidated`);
  }
}

function success(handle: Buffer, bytes: number): ExecutionResult {
  return { frames: [encodeSimpleReply(handle, 0)], errno: 0, bytes };
}

async function readExact(
  context: ExecutionContext,
  offset: number,
  length: number,
  held: Buffer[],
): Promise<Buffer> {
  const { backend, readBuffers } = context;
  let into: Buffer | undefined;
  if (readBuffers !== undefined) {
    into = readBuffers.take(length);
    held.push(into);
  }
  const data = await backend.read(offset, length, into);
  // A short or long buffer would desynchronise the client's stream: refuse it.
  if (data.length !== length) {
    throw new SnapblockError("INTERNAL", `backend returned ${data.length} bytes for a read of ${length}`);
  }
  return data;
}

/** proto.md "Simple replies" to NBD_CMD_READ: header, then exactly `length` bytes. */
async function simpleRead(
  request: NbdRequest,
  context: ExecutionContext,
  held: Buffer[],
): Promise<ExecutionResult> {
  const data =
    request.length === 0 ? Buffer.alloc(0) : await readExact(context, request.offset, request.length, held);
  return { frames: [encodeSimpleReply(request.handle, 0), data], errno: 0, bytes: data.length, held };
}

/**
 * proto.md "Structured replies" to NBD_CMD_READ: holes are sent as NBD_REPLY_TYPE_OFFSET_HOLE
 * (12 bytes instead of the zeroes) and data as NBD_REPLY_TYPE_OFFSET_DATA, unless the client set
 * NBD_CMD_FLAG_DF, which asks for a single data chunk. All data is read before anything is sent,
 * so the last chunk can carry NBD_REPLY_FLAG_DONE without risk of a later error.
 */
async function structuredRead(
  request: NbdRequest,
  context: ExecutionContext,
  held: Buffer[],
): Promise<ExecutionResult> {
  const { backend } = context;
  const { handle, offset, length } = request;
  if (length === 0) return { frames: [encodeStructuredNone(handle)], errno: 0, bytes: 0 };
  const runs =
    (request.flags & NBD_CMD_FLAG_DF) !== 0
      ? undefined
      : coverRange(offset, length, backend.extents(offset, length));
  if (runs === undefined || (runs.length === 1 && runs[0]!.allocated)) {
    // DF, or the usual read (all data): one data chunk.
    const data = await readExact(context, offset, length, held);
    return { frames: encodeOffsetData(handle, offset, data, true), errno: 0, bytes: length, held };
  }
  // Every read settles before a failure is reported: the buffers they fill are then given back.
  const settled = await Promise.allSettled(
    runs.map((run) =>
      run.allocated ? readExact(context, run.offset, run.length, held) : Promise.resolve(undefined),
    ),
  );
  const contents = settled.map((s) => {
    if (s.status === "rejected") throw s.reason;
    return s.value;
  });
  const frames: Buffer[] = [];
  runs.forEach((run, index) => {
    const done = index === runs.length - 1;
    const data = contents[index];
    if (data === undefined) frames.push(encodeOffsetHole(handle, run.offset, run.length, done));
    else frames.push(...encodeOffsetData(handle, run.offset, data, done));
  });
  return { frames, errno: 0, bytes: length, held };
}

/**
 * proto.md "NBD_CMD_WRITE_ZEROES". Without NO_HOLE the backend punches whole chunks (metadata
 * only) and writes the partial ends. NO_HOLE asks for provisioned space, so real zeroes are
 * written. FAST_ZERO: fail with ENOTSUP, touching nothing, whenever zeroing would not beat a
 * write: with NO_HOLE, or when no whole chunk is covered (then it is a plain write of zeroes).
 */
async function writeZeroes(
  request: NbdRequest,
  context: ExecutionContext,
  fua: boolean,
): Promise<ExecutionResult> {
  const { backend } = context;
  const { handle, offset, length, flags } = request;
  const noHole = (flags & NBD_CMD_FLAG_NO_HOLE) !== 0;
  if (length === 0) return success(handle, 0);
  if ((flags & NBD_CMD_FLAG_FAST_ZERO) !== 0 && !zeroingIsFast(offset, length, backend.chunkSize, noHole)) {
    return errorResult(
      request,
      NBD_ENOTSUP,
      "zeroing this range is not faster than writing it",
      context.structuredReplies,
    );
  }
  if (!noHole) {
    await backend.writeZeroes(offset, length, { fua });
    return success(handle, 0);
  }
  zeroPiece ??= Buffer.alloc(ZERO_PIECE);
  for (let position = offset; position < offset + length; position += ZERO_PIECE) {
    const step = Math.min(ZERO_PIECE, offset + length - position);
    await backend.write(position, zeroPiece.subarray(0, step));
  }
  // One flush instead of FUA on every piece: it makes the whole range durable before the reply.
  if (fua) await backend.flush();
  return success(handle, 0);
}

function zeroingIsFast(offset: number, length: number, chunkSize: number, noHole: boolean): boolean {
  if (noHole) return false;
  if (!(chunkSize > 0)) return false;
  const firstWhole = Math.ceil(offset / chunkSize) * chunkSize;
  const lastWhole = Math.floor((offset + length) / chunkSize) * chunkSize;
  return lastWhole > firstWhole;
}

/** proto.md "NBD_CMD_BLOCK_STATUS": exactly one NBD_REPLY_TYPE_BLOCK_STATUS chunk per selected context. */
function blockStatus(request: NbdRequest, context: ExecutionContext): ExecutionResult {
  const contextId = context.baseAllocationContextId;
  if (contextId === undefined) {
    // Validation already refuses this; kept so the reply is never malformed.
    return errorResult(request, NBD_EINVAL, "no metadata context was selected", true);
  }
  const { offset, length } = request;
  const descriptors = buildBlockStatus(offset, length, context.backend.extents(offset, length), {
    reqOne: (request.flags & NBD_CMD_FLAG_REQ_ONE) !== 0,
    maxDescriptors: MAX_STATUS_DESCRIPTORS,
  });
  return { frames: [encodeBlockStatus(request.handle, contextId, descriptors, true)], errno: 0, bytes: 0 };
}
