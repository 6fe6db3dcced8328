import { SnapblockError } from "../errors/index.js";
import type { WireChunkData, WireChunkRuns, WireSnapshotChunk } from "./engine-messages.js";
import type { VolumeDevice } from "../engine-api/index.js";
import { allocWithHeadroom, HEADER_ROOM, withHeadroom } from "./chunk-data-encoding.js";

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

/** Messages read ahead of the one being sent: the disk (or page cache) works while the stream waits. */
const READ_AHEAD = 4;

/**
 * The asked chunks cut into the messages that carry them: runs of chunks that follow each other
 * in the list and in number, all holes or all holding data, at most `perMessage` chunks each.
 */
export function chunkMessages(
  chunks: readonly number[],
  perMessage: number,
  allocated: (chunk: number) => boolean,
): { chunk: number; count: number; hole: boolean }[] {
  const out: { chunk: number; count: number; hole: boolean }[] = [];
  let run: { chunk: number; count: number; hole: boolean } | undefined;
  for (const c of chunks) {
    const hole = !allocated(c);
    if (run && run.hole === hole && run.chunk + run.count === c && run.count < perMessage) run.count++;
    else out.push((run = { chunk: c, count: 1, hole }));
  }
  return out;
}

/**
 * The content of the asked chunks of snapshot `name`, in the caller's chunk size, in the order
 * asked; a chunk with nothing allocated is sent as a hole. With `maxMessageBytes`, chunks that
 * follow each other travel together, read with one call (a message per chunk cost more than the
 * bytes: bench:cluster). Up to READ_AHEAD messages are read ahead of the one being sent; a chunk
 * that cannot be read fails the stream at its turn, after the messages before it were sent. The
 * snapshot stays open (so it cannot be deleted) until the stream ends and no read is running.
 */
export async function* readChunkContents(
  opener: SnapshotOpener,
  request: { name: string; chunkSize: number; chunks: number[]; maxMessageBytes?: number },
): AsyncGenerator<WireChunkData> {
  const cs = request.chunkSize;
  if (!Number.isInteger(cs) || cs < 4096 || cs > 1 << 20 || (cs & (cs - 1)) !== 0) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `chunk size ${cs} must be a power of two from 4096 to 1048576`,
    );
  }
  const device = opener.openSnapshotDevice(request.name);
  const ahead: Promise<WireChunkData>[] = [];
  try {
    for (const c of request.chunks) {
      if (!Number.isSafeInteger(c * cs) || c * cs >= device.size) {
        throw new SnapblockError("OUT_OF_RANGE", `chunk ${c} is past the end of snapshot '${request.name}'`);
      }
    }
    const limit = Math.min(request.maxMessageBytes ?? 0, MAX_CHUNK_MESSAGE_BYTES);
    const perMessage = Math.max(1, Math.floor(limit / cs));
    const messages = chunkMessages(request.chunks, perMessage, (c) =>
      device.extents(c * cs, Math.min(cs, device.size - c * cs)).some((e) => e.allocated),
    );
    const readOne = async (m: { chunk: number; count: number; hole: boolean }): Promise<WireChunkData> => {
      const from = m.chunk * cs;
      if (m.hole) return { chunk: m.chunk, data: Buffer.alloc(0), hole: true, count: m.count };
      const length = Math.min(m.count * cs, device.size - from);
      if (!device.readInto) {
        return { chunk: m.chunk, data: await device.read(from, length), hole: false, count: m.count };
      }
      const buffer = allocWithHeadroom(length);
      await device.readInto(from, length, buffer, HEADER_ROOM);
      return withHeadroom(m.chunk, m.count, buffer);
    };
    let next = 0;
    while (next < messages.length || ahead.length > 0) {
      while (ahead.length < READ_AHEAD && next < messages.length) {
        const read = readOne(messages[next++]!);
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
