import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isSnapblockError } from "../errors/index.js";
import { BufferPool } from "./buffer-pool.js";
import { OwnedMemoryReader, openReader } from "./owned-memory-reader.js";
import { StreamReader, type ByteReader } from "./stream-reader.js";

const HIGH_WATER = 64 * 1024;

let dir: string;
const cleanups: Array<() => void> = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "snapblock-owned-reader-"));
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) cleanup();
  await rm(dir, { recursive: true, force: true });
});

/** A unix-socket server accepting paused (as the NBD listener does) and a client connected to it. */
async function connectedPair(): Promise<{ accepted: net.Socket; client: net.Socket }> {
  const path = join(dir, `s${cleanups.length}.sock`);
  let accept!: (socket: net.Socket) => void;
  const acceptedP = new Promise<net.Socket>((resolve) => (accept = resolve));
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, accept);
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const client = net.connect(path);
  await new Promise<void>((resolve) => client.once("connect", resolve));
  const accepted = await acceptedP;
  cleanups.push(() => {
    client.destroy();
    accepted.destroy();
    server.close();
  });
  return { accepted, client };
}

/** Adopts the accepted socket; fails the test if adoption is refused. */
async function adoptedPair(): Promise<{ reader: OwnedMemoryReader; socket: net.Socket; client: net.Socket }> {
  const { accepted, client } = await connectedPair();
  const adopted = OwnedMemoryReader.adopt(accepted, { highWaterMark: HIGH_WATER });
  if (adopted === undefined) throw new Error("adoption refused");
  cleanups.push(() => adopted.socket.destroy());
  return { ...adopted, client };
}

/** Deterministic pseudo-random numbers (xorshift), so a failure can be replayed. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

/** Frames of [u32 length][bytes], sent in pieces of random size with pauses between some. */
async function sendFrames(client: net.Socket, frames: Buffer[], random: () => number): Promise<void> {
  const wire = Buffer.concat(
    frames.flatMap((f) => {
      const head = Buffer.alloc(4);
      head.writeUInt32BE(f.length);
      return [head, f];
    }),
  );
  for (let at = 0; at < wire.length;) {
    const step = Math.min(wire.length - at, 1 + Math.floor(random() * (random() < 0.5 ? 64 : 400_000)));
    const drained = client.write(wire.subarray(at, at + step));
    at += step;
    if (!drained) await new Promise((resolve) => client.once("drain", resolve));
    else if (random() < 0.1) await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/** Reads frames back as the NBD transmission does: tryTake first, readExact when short. */
async function readFrames(reader: ByteReader, count: number, pool: BufferPool): Promise<string[]> {
  const digests: string[] = [];
  const take = (bytes: number): Buffer => pool.take(bytes);
  for (let i = 0; i < count; i++) {
    const head = reader.tryTake(4) ?? (await reader.readExact(4));
    const length = head.readUInt32BE(0);
    const body = reader.tryTake(length, take) ?? (await reader.readExact(length, take));
    digests.push(createHash("sha256").update(body).digest("hex"));
    // Given back at once: the next frame may land in the same memory, as payloads do.
    pool.give(body);
  }
  return digests;
}

describe("OwnedMemoryReader", () => {
  it("delivers every frame intact, small and larger than its staging buffer, however the bytes arrive", async () => {
    const random = prng(7);
    const frames = Array.from({ length: 300 }, (_, i) =>
      randomBytes(
        i % 10 === 0 ? 1 + Math.floor(random() * 3 * 1024 * 1024) : 1 + Math.floor(random() * 9000),
      ),
    );
    const { reader, client } = await adoptedPair();
    const pool = new BufferPool({
      minBytes: 4096,
      maxBytes: 8 * 1024 * 1024,
      maxKeptBytes: 16 * 1024 * 1024,
    });
    const [got] = await Promise.all([
      readFrames(reader, frames.length, pool),
      sendFrames(client, frames, random),
    ]);
    expect(got).toEqual(frames.map((f) => createHash("sha256").update(f).digest("hex")));
  });

  it("bounds what it buffers while nobody reads, then hands everything over", async () => {
    const { reader, client } = await adoptedPair();
    const sent = Buffer.alloc(4 * 1024 * 1024);
    for (let i = 0; i < sent.length; i += 4) sent.writeUInt32LE(i, i);
    client.write(sent);
    await new Promise((resolve) => setTimeout(resolve, 200));
    // Paused at the high-water mark; one socket read may land before the pause takes effect.
    expect(reader.bufferedBytes).toBeGreaterThanOrEqual(HIGH_WATER);
    expect(reader.bufferedBytes).toBeLessThanOrEqual(HIGH_WATER + 64 * 1024);
    const got = await reader.readExact(sent.length);
    expect(got.equals(sent)).toBe(true);
  });

  it("replies go through the socket it returns, and the retired object did not close the connection", async () => {
    const { accepted, client } = await connectedPair();
    const { reader, stream } = openReader(accepted, { highWaterMark: HIGH_WATER });
    expect(reader).toBeInstanceOf(OwnedMemoryReader);
    expect(stream).not.toBe(accepted);
    client.write("ping");
    expect((await reader.readExact(4)).toString()).toBe("ping");
    const answer = new Promise<string>((resolve) =>
      client.once("data", (d: Buffer) => resolve(d.toString())),
    );
    stream.write("pong");
    expect(await answer).toBe("pong");
    (stream as net.Socket).destroy();
  });

  it("reads what was buffered after the client half-closes, then fails with CLOSED", async () => {
    const { reader, client } = await adoptedPair();
    client.end("last words");
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect((await reader.readExact(4)).toString()).toBe("last");
    const error: unknown = await reader.readExact(100).catch((err: unknown) => err);
    expect(isSnapblockError(error, "CLOSED")).toBe(true);
  });

  it("fails a read waiting for its destination when the client goes away", async () => {
    const { reader, client } = await adoptedPair();
    const pending = reader.readExact(1024 * 1024);
    client.end(Buffer.alloc(1000));
    const error: unknown = await pending.catch((err: unknown) => err);
    expect(isSnapblockError(error, "CLOSED")).toBe(true);
  });

  it("fails pending and later reads when stopped, and discards without keeping bytes", async () => {
    const { reader, client } = await adoptedPair();
    const discarding = reader.discard(3 * 1024 * 1024);
    client.write(Buffer.alloc(3 * 1024 * 1024, 1));
    client.write("next");
    await discarding;
    expect((await reader.readExact(4)).toString()).toBe("next");
    const pending = reader.readExact(10);
    reader.stop("shutting down");
    expect(isSnapblockError(await pending.catch((err: unknown) => err), "CLOSED")).toBe(true);
    expect(isSnapblockError(await reader.readExact(1).catch((err: unknown) => err), "CLOSED")).toBe(true);
  });

  it("leaves a socket that is already reading alone; openReader then reads it as a stream", async () => {
    const { accepted, client } = await connectedPair();
    // The client side of a connection is not paused on connect: not adoptable.
    expect(OwnedMemoryReader.adopt(client, { highWaterMark: HIGH_WATER })).toBeUndefined();
    const opened = openReader(client, { highWaterMark: HIGH_WATER });
    expect(opened.reader).toBeInstanceOf(StreamReader);
    expect(opened.stream).toBe(client);
    accepted.resume();
    accepted.write("hello");
    expect((await opened.reader.readExact(5)).toString()).toBe("hello");
  });
});

describe("BufferPool", () => {
  const pool = (): BufferPool => new BufferPool({ minBytes: 4096, maxBytes: 1 << 20, maxKeptBytes: 1 << 20 });

  it("hands a buffer out again only after it was given back, and never twice at once", () => {
    const p = pool();
    const a = p.take(5000);
    expect(a.length).toBe(5000);
    p.give(a);
    p.give(a); // a second give is ignored
    const b = p.take(6000);
    const c = p.take(7000);
    expect(b.buffer).toBe(a.buffer); // same size class (8 KiB): reused
    expect(c.buffer).not.toBe(b.buffer);
  });

  it("ignores buffers it did not make and keeps at most its bound", () => {
    const p = pool();
    p.give(Buffer.alloc(8192));
    expect(p.keptBytes).toBe(0);
    const big = [p.take(1 << 20), p.take(1 << 20)];
    for (const b of big) p.give(b);
    expect(p.keptBytes).toBe(1 << 20);
    // Outside the size range: plain buffers, never kept.
    const small = p.take(100);
    p.give(small);
    expect(small.length).toBe(100);
    expect(p.keptBytes).toBe(1 << 20);
  });
});
