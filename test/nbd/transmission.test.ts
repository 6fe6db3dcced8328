/**
 * Transmission phase against the real server on a real unix socket, with the hand-written client
 * checking every reply against proto.md's MUSTs (see raw-client.ts).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { SnapblockError } from "../../pkg/errors/index.js";
import { patternBuffer, serveMemory, sleep, type TestExport } from "./harness.js";
import { CMD, CMD_FLAG, ERRNO, RawNbdClient, REPLY_TYPE, TFLAG } from "./raw-client.js";

const MiB = 1024 * 1024;
const CHUNK = 64 * 1024;

describe("NBD transmission", () => {
  let t: TestExport;
  const clients: RawNbdClient[] = [];
  const open = async (options: Parameters<typeof RawNbdClient.open>[1] = {}): Promise<RawNbdClient> => {
    const { client } = await RawNbdClient.open(t.socketPath, options);
    clients.push(client);
    return client;
  };

  beforeAll(async () => {
    t = await serveMemory({ size: 64 * MiB });
  });
  afterEach(() => {
    t.backend.failWith = undefined;
    t.backend.setLatency(0);
    for (const client of clients) expect(client.violations).toEqual([]);
  });
  afterAll(async () => {
    for (const client of clients) client.destroy();
    await t.cleanup();
  });

  it("writes and reads back with simple replies", async () => {
    const client = await open({ structured: false });
    const data = patternBuffer(100_000, 1);
    expect((await client.writeAt(12_345, data)).error).toBe(0);
    const reply = await client.readAt(12_345, data.length);
    expect(reply.structured).toBe(false);
    expect(reply.error).toBe(0);
    expect(reply.data?.equals(data)).toBe(true);
    expect((await client.readAt(0, 0)).error).toBe(0);
  });

  it("sends holes as OFFSET_HOLE and data as OFFSET_DATA, and one chunk with DF", async () => {
    const client = await open();
    const data = patternBuffer(CHUNK, 2);
    await client.writeAt(10 * MiB + CHUNK, data);
    const reply = await client.readAt(10 * MiB, 3 * CHUNK);
    expect(reply.error).toBe(0);
    expect(reply.chunks.map((c) => c.type)).toEqual([
      REPLY_TYPE.OFFSET_HOLE,
      REPLY_TYPE.OFFSET_DATA,
      REPLY_TYPE.OFFSET_HOLE,
    ]);
    expect(reply.chunks.at(-1)?.flags).toBe(1);
    expect(reply.data?.subarray(CHUNK, 2 * CHUNK).equals(data)).toBe(true);
    expect(reply.data?.subarray(0, CHUNK).every((b) => b === 0)).toBe(true);

    const df = await client.readAt(10 * MiB, 3 * CHUNK, CMD_FLAG.DF);
    expect(df.chunks.map((c) => c.type)).toEqual([REPLY_TYPE.OFFSET_DATA]);
    expect(df.data?.equals(reply.data!)).toBe(true);

    const empty = await client.readAt(5, 0);
    expect(empty.chunks.map((c) => c.type)).toEqual([REPLY_TYPE.NONE]);
  });

  it("rejects requests beyond the end with the errno proto.md asks for, and goes on", async () => {
    const client = await open();
    const size = 64 * MiB;
    expect((await client.readAt(size - 10, 11)).error).toBe(ERRNO.EINVAL);
    expect((await client.readAt(2 ** 62, 1)).error).toBe(ERRNO.EINVAL);
    expect((await client.writeAt(size - 1, Buffer.alloc(2))).error).toBe(ERRNO.ENOSPC);
    expect((await client.send({ type: CMD.TRIM, offset: size, length: 1 })).error).toBe(ERRNO.EINVAL);
    expect((await client.send({ type: CMD.WRITE_ZEROES, offset: size, length: 1 })).error).toBe(ERRNO.ENOSPC);
    expect((await client.send({ type: CMD.BLOCK_STATUS, offset: size - 1, length: 2 })).error).toBe(
      ERRNO.EINVAL,
    );
    const error = await client.readAt(size, 1);
    expect(error.structured).toBe(true);
    expect(error.errorMessage).toMatch(/beyond the end/);
    // The stream is still in sync: the refused write's payload was consumed.
    expect((await client.readAt(size - 1, 1)).error).toBe(0);
  });

  it("rejects over-long requests with EINVAL after discarding the payload", async () => {
    const client = await open({ structured: false });
    const tooBig = 32 * MiB + 1;
    const write = await client.send({
      type: CMD.WRITE,
      offset: 0,
      length: tooBig,
      payload: Buffer.alloc(tooBig, 7),
    });
    expect(write.error).toBe(ERRNO.EINVAL);
    expect((await client.readAt(0, tooBig)).error).toBe(ERRNO.EINVAL);
    const max = await client.readAt(0, 32 * MiB);
    expect(max.error).toBe(0);
    expect(max.data?.length).toBe(32 * MiB);
    expect(
      t.backend
        .snapshot()
        .subarray(0, 16)
        .every((b) => b !== 7),
    ).toBe(true);
  });

  it("rejects unknown commands and flags with EINVAL", async () => {
    const structured = await open();
    expect((await structured.send({ type: 42, offset: 0, length: 0 })).error).toBe(ERRNO.EINVAL);
    expect((await structured.send({ type: CMD.READ, flags: 0x100, offset: 0, length: 1 })).error).toBe(
      ERRNO.EINVAL,
    );
    expect(
      (
        await structured.send({
          type: CMD.WRITE,
          flags: CMD_FLAG.DF,
          offset: 0,
          length: 1,
          payload: Buffer.alloc(1),
        })
      ).error,
    ).toBe(ERRNO.EINVAL);
    expect(
      (await structured.send({ type: CMD.READ, flags: CMD_FLAG.REQ_ONE, offset: 0, length: 1 })).error,
    ).toBe(ERRNO.EINVAL);
    const simple = await open({ structured: false });
    // DF is only valid once structured replies (and so NBD_FLAG_SEND_DF) were negotiated.
    expect((await simple.readAt(0, 1, CMD_FLAG.DF)).error).toBe(ERRNO.EINVAL);
    expect((await simple.send({ type: CMD.BLOCK_STATUS, offset: 0, length: 1 })).error).toBe(ERRNO.EINVAL);
    // FUA is valid on every command (proto.md "Command flags").
    expect((await simple.readAt(0, 1, CMD_FLAG.FUA)).error).toBe(0);
  });

  it("reports the allocation map with base:allocation, honouring REQ_ONE", async () => {
    const client = await open();
    await client.send({ type: CMD.WRITE_ZEROES, offset: 20 * MiB, length: MiB });
    await client.writeAt(20 * MiB + 2 * CHUNK, Buffer.alloc(2 * CHUNK, 1));
    const status = await client.send({ type: CMD.BLOCK_STATUS, offset: 20 * MiB, length: 6 * CHUNK });
    expect(status.error).toBe(0);
    const [descriptors] = [...status.status!.values()];
    expect(descriptors).toEqual([
      { length: 2 * CHUNK, flags: 3 },
      { length: 2 * CHUNK, flags: 0 },
      { length: 2 * CHUNK, flags: 3 },
    ]);
    const one = await client.send({
      type: CMD.BLOCK_STATUS,
      flags: CMD_FLAG.REQ_ONE,
      offset: 20 * MiB + CHUNK,
      length: 4 * CHUNK,
    });
    expect([...one.status!.values()][0]).toEqual([{ length: CHUNK, flags: 3 }]);
    const noContext = await open({ metaContext: false });
    expect((await noContext.send({ type: CMD.BLOCK_STATUS, offset: 0, length: CHUNK })).error).toBe(
      ERRNO.EINVAL,
    );
  });

  it("implements WRITE_ZEROES with NO_HOLE and FAST_ZERO", async () => {
    const client = await open();
    const base = 30 * MiB;
    await client.writeAt(base, Buffer.alloc(4 * CHUNK, 9));
    const allocated = (): number => t.backend.extents(base, 4 * CHUNK).filter((e) => e.allocated).length;

    // FAST_ZERO with NO_HOLE: zeroes would have to be written, so ENOTSUP and nothing changes.
    const refused = await client.send({
      type: CMD.WRITE_ZEROES,
      flags: CMD_FLAG.FAST_ZERO | CMD_FLAG.NO_HOLE,
      offset: base,
      length: CHUNK,
    });
    expect(refused.error).toBe(ERRNO.ENOTSUP);
    expect((await client.readAt(base, 4)).data).toEqual(Buffer.alloc(4, 9));
    // FAST_ZERO within a single chunk: no faster than a write.
    expect(
      (
        await client.send({
          type: CMD.WRITE_ZEROES,
          flags: CMD_FLAG.FAST_ZERO,
          offset: base + 10,
          length: 100,
        })
      ).error,
    ).toBe(ERRNO.ENOTSUP);

    // Fast zeroing of whole chunks punches holes.
    const fast = await client.send({
      type: CMD.WRITE_ZEROES,
      flags: CMD_FLAG.FAST_ZERO,
      offset: base,
      length: 2 * CHUNK,
    });
    expect(fast.error).toBe(0);
    expect(t.backend.extents(base, 2 * CHUNK)).toEqual([
      { offset: base, length: 2 * CHUNK, allocated: false },
    ]);

    // NO_HOLE writes real zeroes: the range reads as zeroes and stays allocated.
    const noHole = await client.send({
      type: CMD.WRITE_ZEROES,
      flags: CMD_FLAG.NO_HOLE | CMD_FLAG.FUA,
      offset: base + 2 * CHUNK,
      length: 2 * CHUNK,
    });
    expect(noHole.error).toBe(0);
    expect(allocated()).toBe(1);
    expect((await client.readAt(base, 4 * CHUNK)).data?.every((b) => b === 0)).toBe(true);
  });

  it("passes FUA to the backend and flushes on NBD_CMD_FLUSH", async () => {
    const client = await open();
    const before = { ...t.backend.counters };
    expect((await client.writeAt(0, Buffer.alloc(512, 1), CMD_FLAG.FUA)).error).toBe(0);
    expect((await client.send({ type: CMD.FLUSH, offset: 0, length: 0 })).error).toBe(0);
    expect(t.backend.counters.fuaWrites).toBe(before.fuaWrites + 1);
    expect(t.backend.counters.flushes).toBe(before.flushes + 1);
  });

  it("maps backend errors to NBD errno values", async () => {
    const client = await open();
    const cases: Array<[SnapblockError | Error, number]> = [
      [new SnapblockError("NO_SPACE", "pool full"), ERRNO.ENOSPC],
      [new SnapblockError("OUT_OF_RANGE", "too far"), ERRNO.EINVAL],
      [new SnapblockError("INVALID_ARGUMENT", "bad"), ERRNO.EINVAL],
      [new SnapblockError("READ_ONLY", "snapshot"), ERRNO.EPERM],
      [new SnapblockError("CORRUPT", "checksum"), ERRNO.EIO],
      [new Error("something unexpected"), ERRNO.EIO],
    ];
    for (const [error, errno] of cases) {
      t.backend.failWith = error;
      expect((await client.writeAt(0, Buffer.alloc(10))).error).toBe(errno);
      const read = await client.readAt(0, 10);
      expect(read.error).toBe(errno);
      expect(read.errorMessage?.length).toBeGreaterThan(0);
    }
  });

  it("executes many requests concurrently and replies as each completes", async () => {
    const client = await open();
    t.backend.setLatency(15);
    const count = 200;
    const region = 40 * MiB;
    const order: number[] = [];
    const writes = Array.from({ length: count }, (_, i) =>
      client.writeAt(region + i * 4096, patternBuffer(4096, i + 10)).then((reply) => {
        order.push(i);
        return reply;
      }),
    );
    const replies = await Promise.all(writes);
    expect(replies.every((r) => r.error === 0)).toBe(true);
    // Out-of-order completion: with random latency the reply order differs from submission.
    expect(order).not.toEqual([...order].sort((a, b) => a - b));
    expect(t.backend.counters.maxConcurrent).toBeGreaterThan(8);
    const reads = await Promise.all(
      Array.from({ length: count }, (_, i) => client.readAt(region + i * 4096, 4096)),
    );
    reads.forEach((reply, i) => expect(reply.data?.equals(patternBuffer(4096, i + 10))).toBe(true));
  });

  it("answers requests sent before NBD_CMD_DISC, then closes", async () => {
    const client = await open();
    t.backend.setLatency(50);
    const write = client.writeAt(50 * MiB, Buffer.alloc(CHUNK, 0x5a));
    await client.disconnect();
    expect((await write).error).toBe(0);
    expect(await client.closesWithin(2000)).toBe(true);
    expect(t.backend.snapshot()[50 * MiB]).toBe(0x5a);
  });

  it("hard-disconnects on a bad request magic after answering in-flight requests", async () => {
    const client = await open();
    t.backend.setLatency(30);
    const read = client.readAt(0, 100);
    client.write(Buffer.alloc(28, 0xee));
    expect((await read).error).toBe(0);
    expect(await client.closesWithin(2000)).toBe(true);
  });

  it("serves the grown size without reconnecting", async () => {
    const client = await open();
    const size = t.backend.size;
    expect((await client.writeAt(size, Buffer.alloc(10))).error).toBe(ERRNO.ENOSPC);
    t.backend.size = size + MiB;
    try {
      expect((await client.writeAt(size, Buffer.alloc(10, 3))).error).toBe(0);
      expect((await client.readAt(size, 10)).data).toEqual(Buffer.alloc(10, 3));
    } finally {
      t.backend.size = size;
    }
  });
});

describe("NBD transmission on a read-only export", () => {
  it("advertises READ_ONLY and rejects every modification with EPERM", async () => {
    const t = await serveMemory({ readOnly: true, name: "snap" });
    try {
      const { client, details } = await RawNbdClient.open(t.socketPath);
      expect(details.flags & TFLAG.READ_ONLY).toBe(TFLAG.READ_ONLY);
      expect(details.flags & (TFLAG.SEND_TRIM | TFLAG.SEND_WRITE_ZEROES | TFLAG.SEND_FAST_ZERO)).toBe(0);
      expect((await client.writeAt(0, Buffer.alloc(512))).error).toBe(ERRNO.EPERM);
      expect((await client.send({ type: CMD.TRIM, offset: 0, length: 512 })).error).toBe(ERRNO.EPERM);
      expect((await client.send({ type: CMD.WRITE_ZEROES, offset: 0, length: 512 })).error).toBe(ERRNO.EPERM);
      expect((await client.readAt(0, 512)).error).toBe(0);
      expect((await client.send({ type: CMD.FLUSH, offset: 0, length: 0 })).error).toBe(0);
      expect(t.backend.counters.writes).toBe(0);
      expect(client.violations).toEqual([]);
      await client.disconnect();
    } finally {
      await t.cleanup();
    }
  });
});

describe("NBD transmission flow control", () => {
  it("never executes more than maxInFlightRequests at once and still serves everything", async () => {
    const t = await serveMemory({ limits: { maxInFlightRequests: 3 }, maxLatencyMs: 5 });
    try {
      const { client } = await RawNbdClient.open(t.socketPath);
      const replies = await Promise.all(
        Array.from({ length: 60 }, (_, i) => client.writeAt(i * 4096, Buffer.alloc(4096, i))),
      );
      expect(replies.every((r) => r.error === 0)).toBe(true);
      expect(t.backend.counters.maxConcurrent).toBeLessThanOrEqual(3);
      await client.disconnect();
    } finally {
      await t.cleanup();
    }
  });

  it("enforces a 512-byte minimum block size when configured", async () => {
    const t = await serveMemory({ exportOptions: { minimumBlockSize: 512 } });
    try {
      const { client, details } = await RawNbdClient.open(t.socketPath);
      const blockSize = details.infos.find((r) => r.data.readUInt16BE(0) === 3)?.data;
      expect(blockSize?.readUInt32BE(2)).toBe(512);
      expect((await client.readAt(1, 512)).error).toBe(ERRNO.EINVAL);
      expect((await client.writeAt(512, Buffer.alloc(100))).error).toBe(ERRNO.EINVAL);
      expect((await client.writeAt(512, Buffer.alloc(1024))).error).toBe(0);
      await client.disconnect();
    } finally {
      await t.cleanup();
    }
  });

  it("pauses reading while the client does not take its replies, without unbounded memory", async () => {
    const t = await serveMemory({ limits: { maxQueuedReplyBytes: 4 * MiB, maxInFlightBytes: 8 * MiB } });
    try {
      const { client } = await RawNbdClient.open(t.socketPath, { structured: false });
      client.socket.pause();
      const reads = Array.from({ length: 64 }, () => client.readAt(0, 4 * MiB));
      await sleep(300);
      // 64 × 4 MiB were asked for; the server stopped after a few because nobody read the replies.
      expect(t.backend.counters.reads).toBeLessThan(12);
      client.socket.resume();
      const replies = await Promise.all(reads);
      expect(replies.every((r) => r.error === 0 && r.data?.length === 4 * MiB)).toBe(true);
      await client.disconnect();
    } finally {
      await t.cleanup();
    }
  });
});
