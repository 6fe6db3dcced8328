import { SnapblockError } from "../errors/index.js";
import type { WireSnapshotChunk } from "./engine-messages.js";
import type { VolumeDevice } from "../engine-api/index.js";

/** What the chunk stream needs from the node's pool: LocalEngine has it. */
export interface SnapshotOpener {
  openSnapshotDevice(name: string): VolumeDevice;
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
