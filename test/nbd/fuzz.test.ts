/**
 * Fuzzing the running server through real unix-socket connections: random and mutated client
 * streams (handshake followed by requests), hostile length fields, and afterwards a check that
 * the server neither crashed, hung, leaked connections nor grew memory, and still serves a
 * well-behaved client. (pkg/nbd/fuzz.test.ts fuzzes the parsers directly with many more inputs.)
 *
 * NBD_FUZZ_ITERATIONS=<n> sets the number of fuzzed connections (default 1000);
 * NBD_FUZZ_SEED=<n> replays a run.
 */
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { patternBuffer, serveMemory, sleep, type TestExport } from "./harness.js";
import { encodeInfoRequest, encodeMetaContextRequest, MAGIC, RawNbdClient } from "./raw-client.js";

const CONNECTIONS = Number(process.env.NBD_FUZZ_ITERATIONS ?? 0) || 1_000;
const SEED = Number(process.env.NBD_FUZZ_SEED ?? 0) || Date.now() % 2 ** 31;
const PARALLEL = 16;
/** Long runs get a test timeout that grows with the number of connections. */
const TIMEOUT_MS = process.env.NBD_FUZZ_ITERATIONS === undefined ? undefined : 120_000 + CONNECTIONS;
const MiB = 1024 * 1024;

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

function option(code: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(16);
  header.writeBigUInt64BE(MAGIC.IHAVEOPT, 0);
  header.writeUInt32BE(code, 8);
  header.writeUInt32BE(data.length, 12);
  return Buffer.concat([header, data]);
}

function request(type: number, offset: number, length: number, flags = 0, payload?: Buffer): Buffer {
  const header = Buffer.alloc(28);
  header.writeUInt32BE(MAGIC.REQUEST, 0);
  header.writeUInt16BE(flags, 4);
  header.writeUInt16BE(type, 6);
  header.writeBigUInt64BE(7n, 8);
  header.writeBigUInt64BE(BigInt(offset), 16);
  header.writeUInt32BE(length >>> 0, 24);
  return payload === undefined ? header : Buffer.concat([header, payload]);
}

const negotiation = Buffer.concat([
  u32(3),
  option(8),
  option(10, encodeMetaContextRequest("vol", ["base:allocation"])),
  option(7, encodeInfoRequest("vol", [3])),
]);
const CORPUS = [
  Buffer.concat([
    negotiation,
    request(0, 0, 65536),
    request(1, 4096, 512, 1, Buffer.alloc(512, 1)),
    request(3, 0, 0),
  ]),
  Buffer.concat([negotiation, request(7, 0, MiB, 8), request(6, 0, 8192, 2 | 16), request(4, 0, 4096)]),
  Buffer.concat([u32(1), option(3), option(1, Buffer.from("vol")), request(0, 100, 10), request(2, 0, 0)]),
  Buffer.concat([
    negotiation,
    request(1, 0, 3, 0, Buffer.from("abc")),
    request(0, 0, 3, 4),
    request(2, 0, 0),
  ]),
];
const INTERESTING = [0, 1, 7, 8, 28, 0xffff, 0x10000, 2 ** 25, 2 ** 25 + 1, 2 ** 31, 2 ** 32 - 1];

function mutate(input: Buffer, random: () => number): Buffer {
  let out = Buffer.from(input);
  const int = (n: number): number => Math.floor(random() * n);
  for (let round = 1 + int(4); round > 0; round -= 1) {
    switch (int(5)) {
      case 0:
        if (out.length > 0) out[int(out.length)]! ^= 1 << int(8);
        break;
      case 1:
        if (out.length >= 4) out.writeUInt32BE(INTERESTING[int(INTERESTING.length)]!, int(out.length - 3));
        break;
      case 2:
        out = out.subarray(0, int(out.length + 1));
        break;
      case 3: {
        const at = int(out.length + 1);
        out = Buffer.concat([
          out.subarray(0, at),
          Buffer.from(Array.from({ length: int(32) }, () => int(256))),
          out.subarray(at),
        ]);
        break;
      }
      default:
        if (out.length > 0) out[int(out.length)] = int(256);
    }
  }
  return out;
}

/** Sends one stream in random pieces, half-closes, and reports whether the server closed in time. */
function fuzzConnection(socketPath: string, input: Buffer, random: () => number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ path: socketPath, allowHalfOpen: true });
    let received = 0;
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(false);
    }, 5_000);
    socket.on("data", (d: Buffer) => (received += d.length));
    socket.on("error", () => undefined);
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(true);
    });
    socket.on("connect", () => {
      let position = 0;
      while (position < input.length) {
        const step = 1 + Math.floor(random() * 200);
        socket.write(input.subarray(position, position + step));
        position += step;
      }
      socket.end();
    });
  });
}

describe("NBD server under fuzzed connections", () => {
  let t: TestExport;

  beforeAll(async () => {
    t = await serveMemory({ size: 16 * MiB, limits: { handshakeTimeoutMs: 2_000 } });
  });
  afterAll(async () => {
    await t.cleanup();
  });

  it(
    `survives ${CONNECTIONS} random and mutated streams (seed ${SEED})`,
    async () => {
      const random = prng(SEED);
      const before = process.memoryUsage();
      const hung: number[] = [];
      for (let i = 0; i < CONNECTIONS; i += PARALLEL) {
        const batch = Array.from({ length: Math.min(PARALLEL, CONNECTIONS - i) }, (_, k) => {
          const base = CORPUS[(i + k) % CORPUS.length]!;
          const input =
            random() < 0.15
              ? Buffer.from(
                  Array.from({ length: Math.floor(random() * 300) }, () => Math.floor(random() * 256)),
                )
              : mutate(base, random);
          return fuzzConnection(t.socketPath, input, random).then((closed) => {
            if (!closed) hung.push(i + k);
          });
        });
        await Promise.all(batch);
      }
      // Every connection was closed by the server once the client had said everything: no hang.
      expect(hung).toEqual([]);
      for (let i = 0; i < 100 && t.server.listConnections().length > 0; i += 1) await sleep(10);
      expect(t.server.listConnections()).toEqual([]);
      expect(t.server.stats().connections).toBe(0);
      expect(t.server.stats().inFlightRequests).toBe(0);
      const after = process.memoryUsage();
      expect(after.heapUsed - before.heapUsed).toBeLessThan(128 * MiB);
      expect(after.arrayBuffers - before.arrayBuffers).toBeLessThan(128 * MiB);

      // And a well-behaved client is served as usual.
      const { client } = await RawNbdClient.open(t.socketPath);
      const data = patternBuffer(100_000, SEED);
      expect((await client.writeAt(12_345, data)).error).toBe(0);
      expect((await client.readAt(12_345, data.length)).data?.equals(data)).toBe(true);
      expect(client.violations).toEqual([]);
      await client.disconnect();
    },
    TIMEOUT_MS,
  );

  it("discards a 4 GiB write payload without buffering it", async () => {
    const { client } = await RawNbdClient.open(t.socketPath);
    const before = process.memoryUsage().arrayBuffers;
    client.write(request(1, 0, 2 ** 32 - 1));
    const junk = Buffer.alloc(MiB, 0x77);
    let peak = 0;
    for (let i = 0; i < 96; i += 1) {
      if (!client.socket.write(junk)) await new Promise((resolve) => client.socket.once("drain", resolve));
      peak = Math.max(peak, process.memoryUsage().arrayBuffers - before);
    }
    // 96 MiB went through; the server held at most a few socket reads of it at any time.
    expect(peak).toBeLessThan(48 * MiB);
    client.destroy();
    for (let i = 0; i < 100 && t.server.listConnections().length > 0; i += 1) await sleep(10);
    expect(t.server.listConnections()).toEqual([]);
  });
});
