/**
 * Fuzzing of everything that parses client bytes: the option parsers, the request parser and
 * validator, the handshake and the transmission loop (driven through an in-memory stream).
 * Random and mutated inputs must never throw, never hang and never grow memory.
 *
 * CI runs a bounded number of inputs (a few seconds). NBD_FUZZ_ITERATIONS=<n> runs n inputs per
 * target instead (e.g. 1000000 for a long run); NBD_FUZZ_SEED=<n> reproduces a run.
 */
import { Duplex } from "node:stream";
import { describe, expect, it } from "vitest";
import { isSnapblockError } from "../errors/index.js";
import type { NbdBackend, NbdBackendExtent } from "./backend.js";
import { buildBlockStatus } from "./block-status.js";
import { computeBlockSize } from "./block-size.js";
import { NBD_OPTS_MAGIC, NBD_REQUEST_MAGIC } from "./constants.js";
import { coverRange } from "./extent-coverage.js";
import { negotiate, type ExportCatalog, type NegotiableExport } from "./handshake.js";
import { DEFAULT_NBD_LIMITS } from "./limits.js";
import { combineObservers } from "./observer.js";
import {
  decodeString,
  parseInfoRequest,
  parseMetaContextRequest,
  parseOptionHeader,
} from "./option-parser.js";
import { ReplyWriter } from "./reply-writer.js";
import { parseRequestHeader } from "./request-parser.js";
import { validateRequest } from "./request-validator.js";
import { StreamReader } from "../streams/index.js";
import { Transmission } from "./transmission.js";
import { silentLogger } from "../log/index.js";

const ITERATIONS = Number(process.env.NBD_FUZZ_ITERATIONS ?? 0) || undefined;
const SEED = Number(process.env.NBD_FUZZ_SEED ?? 0) || Date.now() % 2 ** 31;
/** Long runs get a test timeout that grows with the number of inputs. */
const TIMEOUT_MS = ITERATIONS === undefined ? undefined : 120_000 + ITERATIONS;

/** Small deterministic PRNG (mulberry32) so any failure can be replayed with NBD_FUZZ_SEED. */
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

const INTERESTING_U32 = [
  0,
  1,
  2,
  6,
  7,
  8,
  0x7f,
  0x80,
  0xff,
  0x1000,
  0xffff,
  0x10000,
  2 ** 25,
  2 ** 25 + 1,
  2 ** 31,
  2 ** 32 - 1,
];

function mutate(input: Buffer, random: () => number): Buffer {
  let out = Buffer.from(input);
  const int = (n: number): number => Math.floor(random() * n);
  const rounds = 1 + int(6);
  for (let i = 0; i < rounds; i += 1) {
    switch (int(7)) {
      case 0:
        if (out.length > 0) out[int(out.length)]! ^= 1 << int(8);
        break;
      case 1:
        if (out.length > 0) out[int(out.length)] = int(256);
        break;
      case 2:
        if (out.length >= 4)
          out.writeUInt32BE(INTERESTING_U32[int(INTERESTING_U32.length)]!, int(out.length - 3));
        break;
      case 3:
        out = out.subarray(0, int(out.length + 1));
        break;
      case 4: {
        const at = int(out.length + 1);
        const junk = Buffer.from(Array.from({ length: int(16) }, () => int(256)));
        out = Buffer.concat([out.subarray(0, at), junk, out.subarray(at)]);
        break;
      }
      case 5: {
        const start = int(out.length + 1);
        const end = Math.min(out.length, start + int(64));
        out = Buffer.concat([out, out.subarray(start, end)]);
        break;
      }
      default:
        if (out.length >= 2) out.writeUInt16BE(int(0x10000), int(out.length - 1));
    }
  }
  return out;
}

function randomBytes(random: () => number, max: number): Buffer {
  return Buffer.from(Array.from({ length: Math.floor(random() * max) }, () => Math.floor(random() * 256)));
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

function option(code: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(16);
  header.writeBigUInt64BE(NBD_OPTS_MAGIC, 0);
  header.writeUInt32BE(code, 8);
  header.writeUInt32BE(data.length, 12);
  return Buffer.concat([header, data]);
}

function infoData(name: string, types: number[]): Buffer {
  const count = Buffer.alloc(2 + 2 * types.length);
  count.writeUInt16BE(types.length, 0);
  types.forEach((t, i) => count.writeUInt16BE(t, 2 + 2 * i));
  return Buffer.concat([u32(Buffer.byteLength(name)), Buffer.from(name), count]);
}

function metaData(name: string, queries: string[]): Buffer {
  return Buffer.concat([
    u32(Buffer.byteLength(name)),
    Buffer.from(name),
    u32(queries.length),
    ...queries.flatMap((q) => [u32(Buffer.byteLength(q)), Buffer.from(q)]),
  ]);
}

function request(type: number, offset: number, length: number, flags = 0, payload?: Buffer): Buffer {
  const header = Buffer.alloc(28);
  header.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  header.writeUInt16BE(flags, 4);
  header.writeUInt16BE(type, 6);
  header.writeBigUInt64BE(0x1234n, 8);
  header.writeBigUInt64BE(BigInt(offset), 16);
  header.writeUInt32BE(length, 24);
  return payload === undefined ? header : Buffer.concat([header, payload]);
}

/** A realistic client stream: negotiation then a few requests; the seed of the mutations. */
const HANDSHAKE_CORPUS = [
  Buffer.concat([
    u32(3),
    option(8),
    option(10, metaData("vol", ["base:allocation"])),
    option(7, infoData("vol", [3])),
  ]),
  Buffer.concat([u32(1), option(3), option(6, infoData("", [0, 1, 2, 3])), option(1, Buffer.from("vol"))]),
  Buffer.concat([
    u32(3),
    option(9, metaData("", [])),
    option(8),
    option(9, metaData("vol", ["base:"])),
    option(2),
  ]),
];
const TRANSMISSION_CORPUS = [
  Buffer.concat([request(0, 0, 4096), request(1, 4096, 16, 1, Buffer.alloc(16, 7)), request(3, 0, 0)]),
  Buffer.concat([
    request(7, 0, 65536, 8),
    request(6, 0, 8192, 2 | 16),
    request(4, 0, 4096),
    request(2, 0, 0),
  ]),
  Buffer.concat([request(0, 1000, 10, 4), request(5, 0, 100), request(1, 0, 3, 0, Buffer.from("abc"))]),
];

class TinyBackend implements NbdBackend {
  readonly name = "vol";
  readonly readOnly = false;
  readonly chunkSize = 4096;
  size = 1024 * 1024;
  private readonly data = Buffer.alloc(this.size);
  read(offset: number, length: number): Promise<Buffer> {
    return Promise.resolve(Buffer.from(this.data.subarray(offset, offset + length)));
  }
  write(offset: number, data: Buffer): Promise<void> {
    data.copy(this.data, offset);
    return Promise.resolve();
  }
  flush(): Promise<void> {
    return Promise.resolve();
  }
  trim(offset: number, length: number): Promise<void> {
    this.data.fill(0, offset, offset + length);
    return Promise.resolve();
  }
  writeZeroes(offset: number, length: number): Promise<void> {
    return this.trim(offset, length);
  }
  extents(offset: number, length: number): NbdBackendExtent[] {
    return [
      { offset, length: Math.floor(length / 2), allocated: true },
      { offset: offset + Math.floor(length / 2), length: length - Math.floor(length / 2), allocated: false },
    ];
  }
}

const backend = new TinyBackend();
const exported = {
  name: "vol",
  description: "fuzz",
  backend,
  readOnly: false,
  blockSize: computeBlockSize({ minimum: 1, chunkSize: 4096, maxPayloadBytes: 1024 * 1024 }),
  currentSize: () => backend.size,
  transmissionFlags: () => 0x1 | 0x4 | 0x8 | 0x20 | 0x40,
};
const catalog: ExportCatalog<NegotiableExport & typeof exported> = {
  find: (name) => (name === "vol" || name === "" ? exported : undefined),
  list: () => [exported],
  shuttingDown: () => false,
};

/** A duplex whose readable side replays `input` and whose writable side counts bytes. */
function scriptedStream(input: Buffer, random: () => number): { stream: Duplex; written: () => number } {
  let written = 0;
  const stream = new Duplex({
    allowHalfOpen: true,
    read() {
      // Everything is pushed up front, in random-sized pieces.
    },
    write(chunk: Buffer, _encoding, callback) {
      written += chunk.length;
      callback();
    },
  });
  let position = 0;
  while (position < input.length) {
    const step = 1 + Math.floor(random() * 64);
    stream.push(input.subarray(position, position + step));
    position += step;
  }
  stream.push(null);
  return { stream, written: () => written };
}

const limits = {
  ...DEFAULT_NBD_LIMITS,
  maxOptionBytes: 4096,
  maxOptionsPerConnection: 64,
  maxPayloadBytes: 1024 * 1024,
};

/** Runs one scripted connection; a connection still running after 5 s is a hang and fails the test. */
async function runConnection(
  input: Buffer,
  random: () => number,
  phase: "handshake" | "transmission",
): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${phase} hung on input ${input.toString("hex")}`)), 5_000);
  });
  try {
    await Promise.race([serveScripted(input, random, phase), hang]);
  } finally {
    clearTimeout(timer);
  }
}

async function serveScripted(
  input: Buffer,
  random: () => number,
  phase: "handshake" | "transmission",
): Promise<void> {
  const { stream } = scriptedStream(input, random);
  const reader = new StreamReader(stream, { highWaterMark: 64 * 1024 });
  const writer = new ReplyWriter(stream);
  try {
    if (phase === "handshake") {
      const outcome = await negotiate({
        reader,
        writer,
        catalog,
        limits,
        logger: silentLogger,
        logFields: {},
      });
      expect(["transmission", "closed", "violation"]).toContain(outcome.kind);
    } else {
      const transmission = new Transmission({
        reader,
        writer,
        export: exported,
        structuredReplies: random() < 0.5,
        baseAllocationContextId: random() < 0.5 ? 1 : undefined,
        limits,
        logger: silentLogger,
        logFields: {},
        observer: combineObservers([], () => undefined),
      });
      await transmission.run();
    }
  } catch (err) {
    // Running out of input mid-frame is the only acceptable failure.
    if (!isSnapblockError(err, "CLOSED")) throw err;
  } finally {
    reader.stop();
    stream.destroy();
  }
}

describe("NBD parser fuzzing", () => {
  const iterations = ITERATIONS ?? 20_000;

  it(
    `never throws on random and mutated option and request frames (seed ${SEED})`,
    () => {
      const random = prng(SEED);
      const corpus = [
        infoData("vol", [0, 1, 2, 3]),
        metaData("vol", ["base:allocation", "base:"]),
        request(0, 0, 512),
        option(7, infoData("x", [])),
      ];
      for (let i = 0; i < iterations; i += 1) {
        const input =
          random() < 0.3
            ? randomBytes(random, 80)
            : mutate(corpus[Math.floor(random() * corpus.length)]!, random);
        parseOptionHeader(input);
        const info = parseInfoRequest(input);
        if (info.ok) expect(Buffer.byteLength(info.value.name)).toBeLessThanOrEqual(4096);
        const meta = parseMetaContextRequest(input);
        if (meta.ok) expect(meta.value.queries.length).toBeLessThanOrEqual(input.length / 4);
        decodeString(input, "fuzz");
        const parsed = parseRequestHeader(input.length >= 28 ? input.subarray(0, 28) : input);
        if (parsed.ok) {
          const verdict = validateRequest(parsed.request, {
            size: 1 << 20,
            readOnly: random() < 0.2,
            structuredReplies: random() < 0.5,
            metaContextSelected: random() < 0.5,
            minimumBlockSize: random() < 0.5 ? 1 : 512,
            maxPayloadBytes: 1 << 20,
          });
          if (verdict.ok && parsed.request.type !== 3) {
            expect(parsed.request.offset + parsed.request.length).toBeLessThanOrEqual(1 << 20);
          }
        }
      }
    },
    TIMEOUT_MS,
  );

  it(
    `block status and read planning cover exactly the range whatever the extents (seed ${SEED})`,
    () => {
      const random = prng(SEED + 1);
      for (let i = 0; i < iterations / 4; i += 1) {
        const offset = Math.floor(random() * 10_000);
        const length = 1 + Math.floor(random() * 100_000);
        const extents = Array.from({ length: Math.floor(random() * 8) }, () => ({
          offset: Math.floor(random() * 120_000) - 5_000,
          length: Math.floor(random() * 50_000) - 100,
          allocated: random() < 0.5,
        }));
        const runs = coverRange(offset, length, extents);
        expect(runs.reduce((sum, r) => sum + r.length, 0)).toBe(length);
        runs.forEach((r, k) => {
          expect(r.length).toBeGreaterThan(0);
          expect(r.offset).toBe(k === 0 ? offset : runs[k - 1]!.offset + runs[k - 1]!.length);
        });
        const one = buildBlockStatus(offset, length, extents, { reqOne: true, maxDescriptors: 16 });
        expect(one).toHaveLength(1);
        expect(one[0]!.length).toBeLessThanOrEqual(length);
      }
    },
    TIMEOUT_MS,
  );
});

describe("NBD stream fuzzing", () => {
  const connections = ITERATIONS ?? 4_000;

  it(
    `handshake survives ${connections} random and mutated client streams (seed ${SEED})`,
    async () => {
      const random = prng(SEED + 2);
      const heapBefore = process.memoryUsage().heapUsed;
      for (let i = 0; i < connections; i += 1) {
        const base = HANDSHAKE_CORPUS[i % HANDSHAKE_CORPUS.length]!;
        const input = random() < 0.2 ? randomBytes(random, 200) : mutate(base, random);
        await runConnection(input, random, "handshake");
      }
      expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(256 * 1024 * 1024);
    },
    TIMEOUT_MS,
  );

  it(
    `transmission survives ${connections} random and mutated request streams (seed ${SEED})`,
    async () => {
      const random = prng(SEED + 3);
      const heapBefore = process.memoryUsage().heapUsed;
      for (let i = 0; i < connections; i += 1) {
        const base = TRANSMISSION_CORPUS[i % TRANSMISSION_CORPUS.length]!;
        const input = random() < 0.2 ? randomBytes(random, 200) : mutate(base, random);
        await runConnection(input, random, "transmission");
      }
      expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(256 * 1024 * 1024);
    },
    TIMEOUT_MS,
  );
});
