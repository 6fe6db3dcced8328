import { constants as fsc } from "node:fs";
import { open, rm, writeFile, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { SnapblockError } from "../errors/index.js";

/**
 * Memory for O_DIRECT I/O. Direct I/O moves data between the device and the caller's buffer
 * with no page-cache copy, so the kernel refuses (EINVAL) a buffer whose address is not a
 * multiple of the device's DMA alignment (the logical block size on most devices; 4 KiB covers
 * every common one). JavaScript cannot see an ArrayBuffer's address, and Node's allocator gives
 * no alignment promise beyond 16 bytes, so each slab is *probed*: direct reads of one block of a
 * probe file into the slab at offsets 0, 16, 32, ... until the kernel accepts one. Slices handed
 * out start at that offset plus multiples of 4 KiB, hence all pass.
 *
 * Buffers are kept per power-of-two size and reused, so a slab is probed once and the steady
 * state allocates nothing.
 */
export const DIRECT_ALIGN = 4096;
const SLAB = 8 * 2 ** 20;
/** Free buffers kept per size class: enough for a queue of 32-64 requests in flight. */
const KEEP_BYTES = 64 * 2 ** 20;

let probes = 0;

export class AlignedBuffers {
  private readonly free = new Map<number, Buffer[]>();
  private slab: { memory: Buffer; used: number } | undefined;

  /**
   * `dir` is where a one-block probe file is made while a slab is probed (the directory of the
   * files opened O_DIRECT: the alignment the kernel asks for is that device's).
   */
  constructor(private readonly dir: string) {}

  /** A buffer of exactly `length` bytes (a multiple of 4 KiB) at an address direct I/O accepts. */
  async take(length: number): Promise<Buffer> {
    const size = sizeClass(length);
    const reused = this.free.get(size)?.pop();
    if (reused) return reused.subarray(0, length);
    if (size > SLAB / 2) return (await this.alignedIn(size)).subarray(0, length);
    if (!this.slab || this.slab.used + size > this.slab.memory.length) {
      this.slab = { memory: await this.alignedIn(SLAB), used: 0 };
    }
    const buf = this.slab.memory.subarray(this.slab.used, this.slab.used + size);
    this.slab.used += size;
    return buf.subarray(0, length);
  }

  /** Returns a buffer from `take` for reuse (dropped when enough of its size are kept). */
  give(buf: Buffer): void {
    const size = sizeClass(buf.length);
    const full = Buffer.from(buf.buffer, buf.byteOffset, size);
    const list = this.free.get(size) ?? [];
    if ((list.length + 1) * size <= Math.max(KEEP_BYTES, size)) {
      list.push(full);
      this.free.set(size, list);
    }
  }

  /** `size` bytes of fresh memory whose start direct I/O accepts (rare: slabs are reused). */
  private async alignedIn(size: number): Promise<Buffer> {
    const memory = Buffer.allocUnsafeSlow(size + DIRECT_ALIGN);
    const probePath = join(this.dir, `.direct-io-probe-${process.pid}-${++probes}`);
    await writeFile(probePath, Buffer.alloc(DIRECT_ALIGN, 0x5a), { mode: 0o600 });
    try {
      const handle = await open(probePath, fsc.O_RDONLY | fsc.O_DIRECT);
      try {
        for (let offset = 0; offset < DIRECT_ALIGN; offset += 16) {
          if (await directReadWorks(handle, memory, offset)) return memory.subarray(offset, offset + size);
        }
      } finally {
        await handle.close();
      }
    } finally {
      await rm(probePath, { force: true });
    }
    throw new SnapblockError(
      "IO",
      "direct I/O refused every buffer alignment up to 4 KiB: the pool's filesystem does not support O_DIRECT as expected (start with --data-io buffered)",
    );
  }
}

async function directReadWorks(handle: FileHandle, memory: Buffer, offset: number): Promise<boolean> {
  try {
    const { bytesRead } = await handle.read(memory, offset, DIRECT_ALIGN, 0);
    return bytesRead === DIRECT_ALIGN;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EINVAL") return false;
    throw err;
  }
}

/** The power of two at or above `length`, at least one block. */
function sizeClass(length: number): number {
  let size = DIRECT_ALIGN;
  while (size < length) size *= 2;
  return size;
}
