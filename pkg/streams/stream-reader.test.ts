import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { isSnapblockError } from "../errors/index.js";
import { StreamReader } from "./stream-reader.js";

async function tick(): Promise<void> {
  await new Promise((resolve) => setImmediate(resolve));
}

describe("StreamReader", () => {
  it("assembles exact reads across chunk boundaries", async () => {
    const stream = new PassThrough();
    const reader = new StreamReader(stream, { highWaterMark: 1024 });
    stream.write(Buffer.from("ab"));
    stream.write(Buffer.from("cdef"));
    expect((await reader.readExact(3)).toString()).toBe("abc");
    const pending = reader.readExact(5);
    stream.write(Buffer.from("gh"));
    stream.write(Buffer.from("ijk"));
    expect((await pending).toString()).toBe("defgh");
    expect(reader.bufferedBytes).toBe(3);
  });

  it("copies reads spanning chunks into the allocator's buffer, and returns a view within one chunk", async () => {
    const stream = new PassThrough();
    const reader = new StreamReader(stream, { highWaterMark: 1024 });
    const given: Buffer[] = [];
    const alloc = (bytes: number): Buffer => {
      const b = Buffer.alloc(bytes, "x");
      given.push(b);
      return b;
    };
    stream.write(Buffer.from("abcd"));
    stream.write(Buffer.from("efgh"));
    await tick();
    const joined = await reader.readExact(6, alloc);
    expect(joined.toString()).toBe("abcdef");
    expect(given).toEqual([joined]);
    // "gh" is within one chunk: a view of it, the allocator not asked.
    expect(reader.tryTake(2, alloc)!.toString()).toBe("gh");
    expect(given).toHaveLength(1);
    // An allocator giving the wrong size is a bug, refused rather than read past.
    stream.write(Buffer.from("ij"));
    stream.write(Buffer.from("kl"));
    await tick();
    expect(() => reader.tryTake(4, (n) => Buffer.alloc(n + 1))).toThrow(/allocator gave 5 bytes/);
  });

  it("pauses the stream past the high-water mark and resumes when more is wanted", async () => {
    const stream = new PassThrough();
    const reader = new StreamReader(stream, { highWaterMark: 8 });
    stream.write(Buffer.alloc(10));
    await tick();
    expect(stream.isPaused()).toBe(true);
    // A read larger than the high-water mark resumes the stream until it can be satisfied.
    const big = reader.readExact(30);
    stream.write(Buffer.alloc(25));
    expect((await big).length).toBe(30);
  });

  it("discards bytes without keeping them", async () => {
    const stream = new PassThrough();
    const reader = new StreamReader(stream, { highWaterMark: 16 });
    const discarding = reader.discard(100_000);
    for (let i = 0; i < 100; i += 1) stream.write(Buffer.alloc(1000, i));
    stream.write(Buffer.from("next"));
    await discarding;
    expect((await reader.readExact(4)).toString()).toBe("next");
  });

  it("lets buffered bytes be read after the peer half-closes, then fails with CLOSED", async () => {
    const stream = new PassThrough();
    const reader = new StreamReader(stream, { highWaterMark: 1024 });
    stream.end(Buffer.from("last words"));
    await tick();
    expect((await reader.readExact(4)).toString()).toBe("last");
    const error: unknown = await reader.readExact(100).catch((err: unknown) => err);
    expect(isSnapblockError(error, "CLOSED")).toBe(true);
  });

  it("fails a pending read when stopped", async () => {
    const stream = new PassThrough();
    const reader = new StreamReader(stream, { highWaterMark: 1024 });
    const pending = reader.readExact(10);
    reader.stop("shutting down");
    await expect(pending).rejects.toThrow("shutting down");
    await expect(reader.readExact(1)).rejects.toThrow("shutting down");
  });
});
