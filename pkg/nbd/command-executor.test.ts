import { describe, expect, it } from "vitest";
import { SnapblockError } from "../errors/index.js";
import type { NbdBackend, NbdBackendExtent, NbdWriteOptions } from "./backend.js";
import { executeRequest, type ExecutionContext } from "./command-executor.js";
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_WRITE_ZEROES,
  NBD_EIO,
  NBD_ENOTSUP,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
} from "./constants.js";
import type { NbdRequest } from "./request-parser.js";
import { silentLogger } from "../log/index.js";

const CHUNK = 4096;

/** Records calls; chunks 1 and 3 of every 4 are allocated. */
class RecordingBackend implements NbdBackend {
  readonly name = "rec";
  readonly readOnly = false;
  readonly size = 64 * CHUNK;
  readonly chunkSize = CHUNK;
  calls: string[] = [];
  shortReads = false;

  read(offset: number, length: number): Promise<Buffer> {
    this.calls.push(`read ${offset}+${length}`);
    return Promise.resolve(Buffer.alloc(this.shortReads ? length - 1 : length, 0x61));
  }
  write(offset: number, data: Buffer, options?: NbdWriteOptions): Promise<void> {
    this.calls.push(`write ${offset}+${data.length}${options?.fua === true ? " fua" : ""}`);
    return Promise.resolve();
  }
  flush(): Promise<void> {
    this.calls.push("flush");
    return Promise.resolve();
  }
  trim(offset: number, length: number): Promise<void> {
    this.calls.push(`trim ${offset}+${length}`);
    return Promise.resolve();
  }
  writeZeroes(offset: number, length: number, options?: NbdWriteOptions): Promise<void> {
    this.calls.push(`zero ${offset}+${length}${options?.fua === true ? " fua" : ""}`);
    return Promise.resolve();
  }
  extents(offset: number, length: number): NbdBackendExtent[] {
    const out: NbdBackendExtent[] = [];
    for (let c = Math.floor(offset / CHUNK); c * CHUNK < offset + length; c += 1) {
      out.push({ offset: c * CHUNK, length: CHUNK, allocated: c % 2 === 1 });
    }
    return out;
  }
}

function request(type: number, offset: number, length: number, flags = 0): NbdRequest {
  return { type, offset, length, flags, handle: Buffer.from("handle!!") };
}

function context(backend: NbdBackend, structuredReplies = true): ExecutionContext {
  return { backend, exportName: "rec", structuredReplies, baseAllocationContextId: 1, logger: silentLogger };
}

/** Splits concatenated structured chunks into (type, flags, payload length). */
function chunks(frames: Buffer[]): Array<{ type: number; flags: number; length: number }> {
  const wire = Buffer.concat(frames);
  const out: Array<{ type: number; flags: number; length: number }> = [];
  for (let p = 0; p < wire.length;) {
    const length = wire.readUInt32BE(p + 16);
    out.push({ flags: wire.readUInt16BE(p + 4), type: wire.readUInt16BE(p + 6), length });
    p += 20 + length;
  }
  return out;
}

describe("executeRequest", () => {
  it("reads only allocated runs and sends holes as OFFSET_HOLE, DONE on the last chunk", async () => {
    const backend = new RecordingBackend();
    const result = await executeRequest(request(NBD_CMD_READ, 0, 4 * CHUNK), undefined, context(backend));
    expect(backend.calls).toEqual([`read ${CHUNK}+${CHUNK}`, `read ${3 * CHUNK}+${CHUNK}`]);
    expect(chunks(result.frames)).toEqual([
      { type: NBD_REPLY_TYPE_OFFSET_HOLE, flags: 0, length: 12 },
      { type: NBD_REPLY_TYPE_OFFSET_DATA, flags: 0, length: 8 + CHUNK },
      { type: NBD_REPLY_TYPE_OFFSET_HOLE, flags: 0, length: 12 },
      { type: NBD_REPLY_TYPE_OFFSET_DATA, flags: 1, length: 8 + CHUNK },
    ]);
    expect(result.bytes).toBe(4 * CHUNK);
  });

  it("sends one data chunk for DF and a plain payload without structured replies", async () => {
    const backend = new RecordingBackend();
    const df = await executeRequest(
      request(NBD_CMD_READ, 100, 3 * CHUNK, NBD_CMD_FLAG_DF),
      undefined,
      context(backend),
    );
    expect(chunks(df.frames)).toEqual([
      { type: NBD_REPLY_TYPE_OFFSET_DATA, flags: 1, length: 8 + 3 * CHUNK },
    ]);
    const simple = await executeRequest(request(NBD_CMD_READ, 100, 10), undefined, context(backend, false));
    expect(Buffer.concat(simple.frames).length).toBe(16 + 10);
  });

  it("turns a backend returning the wrong number of bytes into EIO", async () => {
    const backend = new RecordingBackend();
    backend.shortReads = true;
    const result = await executeRequest(
      request(NBD_CMD_READ, 0, 100, NBD_CMD_FLAG_DF),
      undefined,
      context(backend),
    );
    expect(result.errno).toBe(NBD_EIO);
  });

  it("decides fast zeroing by NO_HOLE and whole chunks, before touching anything", async () => {
    const backend = new RecordingBackend();
    const ctx = context(backend);
    const fast = NBD_CMD_FLAG_FAST_ZERO;
    expect((await executeRequest(request(NBD_CMD_WRITE_ZEROES, 10, CHUNK, fast), undefined, ctx)).errno).toBe(
      NBD_ENOTSUP,
    );
    expect(
      (
        await executeRequest(
          request(NBD_CMD_WRITE_ZEROES, 0, CHUNK, fast | NBD_CMD_FLAG_NO_HOLE),
          undefined,
          ctx,
        )
      ).errno,
    ).toBe(NBD_ENOTSUP);
    expect(backend.calls).toEqual([]);
    expect(
      (await executeRequest(request(NBD_CMD_WRITE_ZEROES, 10, 2 * CHUNK, fast), undefined, ctx)).errno,
    ).toBe(0);
    expect(backend.calls).toEqual([`zero 10+${2 * CHUNK}`]);
  });

  it("writes real zeroes in bounded pieces for NO_HOLE, flushing once for FUA", async () => {
    const backend = new RecordingBackend();
    const length = 2.5 * 1024 * 1024;
    const flags = NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FUA;
    expect(
      (await executeRequest(request(NBD_CMD_WRITE_ZEROES, 0, length, flags), undefined, context(backend)))
        .errno,
    ).toBe(0);
    expect(backend.calls).toEqual([
      "write 0+1048576",
      "write 1048576+1048576",
      "write 2097152+524288",
      "flush",
    ]);
  });

  it("does not flush a read-only backend and maps backend failures", async () => {
    const readOnly = Object.assign(new RecordingBackend(), { readOnly: true });
    expect((await executeRequest(request(NBD_CMD_FLUSH, 0, 0), undefined, context(readOnly))).errno).toBe(0);
    expect(readOnly.calls).toEqual([]);
    const failing = new RecordingBackend();
    failing.extents = () => {
      throw new SnapblockError("CORRUPT", "bad table");
    };
    const result = await executeRequest(request(NBD_CMD_BLOCK_STATUS, 0, 10), undefined, context(failing));
    expect(result.errno).toBe(NBD_EIO);
  });
});
