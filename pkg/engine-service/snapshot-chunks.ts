import { SnapblockError } from "../errors/index.js";
import type { WireChunkData, WireChunkRuns, WireSnapshotChunk } from "./engine-messages.js";
import type { VolumeDevice } from "../engine-api/index.js";

/** What the chunk streams need from the node's pool: LocalEngine has it. */
export interface SnapshotOpener {
  openSnapshotDevice(name: string): VolumeDevice;
  /** Chunks (in this pool's chunk size) that differ between two snapshots of one volume. */
  changedChunks(base: string, name: string): { chunkSize: number; chunks: number[] };
}

/** Most runs in one ChunkRuns message (8 bytes each on the wire: well under the size limit). */
const RUNS_PER_MESSAGE = 65_536;

/** Byte ranges as runs of chunks of size `cs` (a chunk touched by a range counts whole). */
function toRuns(ranges: Iterable<[number, number]>, cs: number): [number, number][] {
  const runs: [number, number][] = [];
  for (const [from, to] of ranges) {
    if (to <= from) continue;
    const first = Math.floor(from / cs);
    const end = Math.ceil(to / cs);
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] >= first) last[1] = Math.max(last[1], end - last[0]);
    else runs.push([first, end - first]);
  }
  return runs;
}

/**
 * The chunks a node copying snapshot `name` must fetch, in its chunk size `chunkSize`: every
 * allocated chunk (chunks still pending on this node count: they hold data), or with `baseName`
 * only those that differ from that earlier snapshot when both are of one volume here.
 */
export function* listChunkRuns(
  opener: SnapshotOpener,
  request: { name: string; chunkSize: number; baseName: string },
): Generator<WireChunkRuns> {
  const cs = request.chunkSize;
  if (!Number.isInteger(cs) || cs < 4096 || cs > 1 << 20 || (cs & (cs - 1)) !== 0) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `chunk size ${cs} must be a power of two from 4096 to 1048576`,
    );
  }
  const device = opener.openSnapshotDevice(request.name);
  let runs: [number, number][];
  let incremental = false;
  try {
    const size = device.size;
    let byteRanges: [number, number][] | undefined;
    if (request.baseName !== "") {
      try {
        const changed = opener.changedChunks(request.baseName, request.name);
        byteRanges = changed.chunks.map((c) => [
          c * changed.chunkSize,
          Math.min(size, (c + 1) * changed.chunkSize),
        ]);
        incremental = true;
      } catch (err) {
        // Another volume's snapshot, or gone: the caller gets everything, marked not incremental.
        if (!(err instanceof SnapblockError) || (err.code !== "INVALID_ARGUMENT" && err.code !== "NOT_FOUND"))
          throw err;
      }
    }
    byteRanges ??= device
      .extents(0, size)
      .filter((e) => e.allocated)
      .map((e): [number, number] => [e.offset, e.offset + e.length]);
    runs = toRuns(byteRanges, cs);
    for (let i = 0; i < runs.length || i === 0; i += RUNS_PER_MESSAGE) {
      const part = runs.slice(i, i + RUNS_PER_MESSAGE);
      yield { sizeBytes: size, incremental, firsts: part.map((r) => r[0]), counts: part.map((r) => r[1]) };
    }
  } finally {
    device.close();
  }
}

/** Chunks read ahead of the one being sent: the disk (or page cache) works while the stream waits. */
const READ_AHEAD = 4;

/**
 * The content of the asked chunks of snapshot `name`, in the caller's chunk size, in the order
 * asked; a chunk with nothing allocated is sent as a hole. Up to READ_AHEAD chunks are read ahead
 * of the one being sent; a chunk that cannot be read fails the stream at its turn, after the
 * chunks before it were sent. The snapshot stays open (so it cannot be deleted) until the stream
 * ends and no read is running.
 */
export async function* readChunkContents(
  opener: SnapshotOpener,
  request: { name: string; chunkSize: number; chunks: number[] },
  /** Buffers of chunkSize bytes to read into (reused by the caller); fresh ones without it. */
  buffer?: () => Buffer,
): AsyncGenerator<WireChunkData> {
  const cs = request.chunkSize;
  if (!Number.isInteger(cs) || cs < 4096 || cs > 1 << 20 || (cs & (cs - 1)) !== 0) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `chunk size ${cs} must be a power of two from 4096 to 1048576`,
    );
  }
  const device = opener.openSnapshotDevice(request.name);
  const readOne = async (chunk: number): Promise<WireChunkData> => {
    const from = chunk * cs;
    if (!Number.isSafeInteger(from) || from >= device.size) {
      throw new SnapblockError(
        "OUT_OF_RANGE",
        `chunk ${chunk} is past the end of snapshot '${request.name}'`,
      );
    }
    const length = Math.min(cs, device.size - from);
    const allocated = device.extents(from, length).some((e) => e.allocated);
    return allocated
      ? { chunk, data: await device.read(from, length, buffer?.()), hole: false }
      : { chunk, data: Buffer.alloc(0), hole: true };
  };
  const ahead: Promise<WireChunkData>[] = [];
  let next = 0;
  try {
    while (next < request.chunks.length || ahead.length > 0) {
      while (ahead.length < READ_AHEAD && next < request.chunks.length) {
        const read = readOne(request.chunks[next++]!);
        // Its failure is reported when its turn comes (below), not as an unhandled rejection.
        read.catch(() => undefined);
        ahead.push(read);
      }
      yield await ahead.shift()!;
    }
  } finally {
    await Promise.allSettled(ahead);
    device.close();
  }
}

/** Largest data field of one stream message: well under grpc-js's 4 MiB default limit. */
export const MAX_CHUNK_MESSAGE_BYTES = 1024 * 1024;

/**
 * The allocated ranges of a snapshot, in offset order, cut into messages of at most
 * maxMessageBytes (rounded down to whole chunks). Holes are skipped: they read as zeroes on the
 * receiving side too. Reading from metadata (extents) first means a mostly empty snapshot costs
 * nothing to send. The snapshot stays open (so it cannot be deleted) until the stream ends.
 */
export async function* readAllocatedChunks(
  opener: SnapshotOpener,
  name: string,
  maxMessageBytes: number,
): AsyncGenerator<WireSnapshotChunk> {
  const device = opener.openSnapshotDevice(name);
  try {
    const limit =
      maxMessageBytes > 0 ? Math.min(maxMessageBytes, MAX_CHUNK_MESSAGE_BYTES) : MAX_CHUNK_MESSAGE_BYTES;
    const step = Math.max(device.chunkSize, Math.floor(limit / device.chunkSize) * device.chunkSize);
    if (step > MAX_CHUNK_MESSAGE_BYTES * 4) {
      throw new SnapblockError("INVALID_ARGUMENT", `chunk size ${device.chunkSize} is too large to stream`);
    }
    let first = true;
    for (const extent of device.extents(0, device.size)) {
      if (!extent.allocated) continue;
      for (let offset = extent.offset; offset < extent.offset + extent.length; offset += step) {
        const length = Math.min(step, extent.offset + extent.length - offset);
        const data = await device.read(offset, length);
        yield {
          offset,
          data,
          snapshotSizeBytes: first ? device.size : 0,
          chunkSize: first ? device.chunkSize : 0,
        };
        first = false;
      }
    }
    // An empty snapshot still tells the receiver its size.
    if (first)
      yield { offset: 0, data: Buffer.alloc(0), snapshotSizeBytes: device.size, chunkSize: device.chunkSize };
  } finally {
    device.close();
  }
}
