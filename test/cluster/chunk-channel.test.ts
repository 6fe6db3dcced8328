import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { once } from "node:events";
import { tmpdir } from "node:os";
import path from "node:path";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StatusError, isSnapblockError } from "../../pkg/errors/index.js";
import { createLogger } from "../../pkg/log/index.js";
import { LocalEngine } from "../../pkg/engine-api/index.js";
import {
  CHUNK_CHANNEL_PROTOCOL,
  ChunkChannelClient,
  ChunkChannelUnsupported,
  EngineServer,
  HolderContent,
  RemoteEngine,
} from "../../pkg/engine-service/index.js";
import { makeTestPki, type TestCert, type TestPki } from "./test-certs.js";

const MiB = 2 ** 20;

/** Everything a chunk channel request answers, as [kind, chunk, payload]. */
type Frame = [kind: number, chunk: number, payload: Buffer];

/**
 * A hand-made client of the channel: sends raw request bytes and collects the answer's frames
 * until END or ERROR (or the server closes), to test what the real client never sends.
 */
async function rawExchange(
  address: string,
  cert: TestCert,
  request: Buffer,
): Promise<{ frames: Frame[]; closed: boolean }> {
  const socket = await rawConnect(address, cert);
  socket.write(request);
  let data = Buffer.alloc(0);
  const frames: Frame[] = [];
  let closed = false;
  await new Promise<void>((resolve) => {
    const parse = (): boolean => {
      while (data.length >= 12) {
        const size = data.readUInt32BE(8);
        if (data.length < 12 + size) return false;
        const kind = data.readUInt8(0);
        frames.push([kind, data.readUInt32BE(4), data.subarray(12, 12 + size)]);
        data = data.subarray(12 + size);
        if (kind === 3 || kind === 4) return true;
      }
      return false;
    };
    socket.on("data", (b: Buffer) => {
      data = Buffer.concat([data, b]);
      if (parse()) resolve();
    });
    socket.on("close", () => {
      closed = true;
      resolve();
    });
    socket.on("error", () => undefined);
  });
  if (!closed) {
    // Give a server that means to close the connection a moment to do it.
    await Promise.race([
      once(socket, "close").then(() => (closed = true)),
      new Promise((r) => setTimeout(r, 200)),
    ]);
  }
  socket.destroy();
  return { frames, closed };
}

/** A TLS connection to the engine port that chose the chunk channel, and nothing sent yet. */
async function rawConnect(address: string, cert: TestCert): Promise<tls.TLSSocket> {
  const [host, port] = address.split(":");
  const socket = tls.connect({
    host,
    port: Number(port),
    ca: readFileSync(cert.caFile),
    cert: readFileSync(cert.certFile),
    key: readFileSync(cert.keyFile),
    ALPNProtocols: [CHUNK_CHANNEL_PROTOCOL],
    servername: "snapblock-engine",
    checkServerIdentity: () => undefined,
  });
  socket.on("error", () => undefined);
  await once(socket, "secureConnect");
  expect(socket.alpnProtocol).toBe(CHUNK_CHANNEL_PROTOCOL);
  return socket;
}

function request(body: unknown): Buffer {
  const json = Buffer.from(typeof body === "string" ? body : JSON.stringify(body));
  const head = Buffer.alloc(4);
  head.writeUInt32BE(json.length, 0);
  return Buffer.concat([head, json]);
}

function errorOf(frame: Frame | undefined): { code: string; status?: string; message: string } {
  expect(frame?.[0]).toBe(4);
  return JSON.parse(frame![2].toString()) as { code: string; status?: string; message: string };
}

describe("chunk channel: a cross-node pull's bulk path beside gRPC on the engine port", () => {
  let dir: string;
  let pki: TestPki;
  let engine: LocalEngine;
  let server: EngineServer;
  let grpcOnly: EngineServer;
  let address: string;
  const grants = new Set<string>();
  const logLines: string[] = [];
  let chunkSize = 0;
  let content: Buffer;
  const closers: (() => void)[] = [];

  const channel = (cert: TestCert, nodeId = "node-a", at = address): ChunkChannelClient => {
    const c = new ChunkChannelClient({ nodeId, address: at, transport: { tls: cert }, timeoutMs: 5000 });
    closers.push(() => c.close());
    return c;
  };

  const readAll = async (c: ChunkChannelClient, name: string, chunks: number[]) => {
    const out: { chunk: number; data: Buffer; hole: boolean }[] = [];
    for await (const item of c.readChunks({ name, chunkSize, chunks })) out.push(item);
    return out;
  };

  /** Node-a's engine service over the test's engine, PKI and grants, logging to `write`. */
  const serverOptions = (write: (line: string) => void) => ({
    engine,
    snapshots: engine,
    transport: { tls: pki.node("node-a") },
    version: "test",
    logger: createLogger({ level: "debug", write }),
    pullGrants: {
      allows: (snapshot: string, nodeId: string) => Promise.resolve(grants.has(`${snapshot}@${nodeId}`)),
    },
  });

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "snapblock-chunk-channel-"));
    pki = makeTestPki(dir);
    engine = new LocalEngine({
      nodeId: "node-a",
      poolDir: path.join(dir, "pool"),
      metadataFile: path.join(dir, "meta.json"),
      createIfMissing: { sizeBytes: 64 * MiB },
    });
    await engine.open();
    const common = serverOptions((line) => logLines.push(line));
    server = await EngineServer.start({ ...common, address: "127.0.0.1:0" });
    grpcOnly = await EngineServer.start({ ...common, address: "127.0.0.1:0", chunkChannel: false });
    address = `127.0.0.1:${server.port}`;

    // A volume with chunks 0-2 written (random bytes), chunk 3 a hole, chunk 4 written; snapshotted.
    await engine.createVolume({ name: "src", sizeBytes: 8 * MiB, meta: {} });
    const dev = engine.openVolumeDevice("src");
    chunkSize = dev.chunkSize;
    content = Buffer.alloc(5 * chunkSize);
    for (let i = 0; i < content.length; i++) content[i] = (i * 2654435761) >>> 24;
    content.fill(0, 3 * chunkSize, 4 * chunkSize);
    await dev.write(0, content.subarray(0, 3 * chunkSize));
    await dev.write(4 * chunkSize, content.subarray(4 * chunkSize));
    await dev.flush();
    dev.close();
    await engine.createSnapshot({ volume: "src", name: "snap", meta: {} });
    grants.add("snap@node-b");
  });

  afterAll(async () => {
    for (const close of closers) close();
    await server.shutdown(1000);
    await grpcOnly.shutdown(1000);
    await engine.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("sends a granted node the chunks it asks for, in its order, holes as holes; the connection is reused", async () => {
    const c = channel(pki.node("node-b"));
    const got = await readAll(c, "snap", [4, 0, 3, 2, 1]);
    expect(got.map((g) => [g.chunk, g.hole])).toEqual([
      [4, false],
      [0, false],
      [3, true],
      [2, false],
      [1, false],
    ]);
    for (const g of got) {
      if (!g.hole)
        expect(g.data.equals(content.subarray(g.chunk * chunkSize, (g.chunk + 1) * chunkSize))).toBe(true);
    }
    // A second request rides the same connection: the server logs one caller, two calls, and
    // the client keeps one idle connection.
    const again = await readAll(c, "snap", [2]);
    expect(again[0]!.data.equals(content.subarray(2 * chunkSize, 3 * chunkSize))).toBe(true);
    expect((c as unknown as { idle: unknown[] }).idle).toHaveLength(1);
  });

  it("refuses what gRPC's ReadChunks refuses, with the same codes, and the connection stays usable", async () => {
    const other = channel(pki.node("node-c"));
    const denied = await readAll(other, "snap", [0]).catch((e: unknown) => e);
    expect(denied).toBeInstanceOf(StatusError);
    expect((denied as StatusError).status).toBe("PERMISSION_DENIED");
    expect((denied as Error).message).toContain("has not asked node/node-c");
    // The same over gRPC, for comparison.
    const viaGrpc = new RemoteEngine({ nodeId: "node-a", address, transport: { tls: pki.node("node-c") } });
    closers.push(() => viaGrpc.close());
    const grpcDenied = await (async () => {
      for await (const _ of viaGrpc.readChunks({ name: "snap", chunkSize, chunks: [0] })) void _;
    })().catch((e: unknown) => e);
    expect((grpcDenied as StatusError).status).toBe("PERMISSION_DENIED");

    const controller = channel(pki.controller);
    const notNode = await readAll(controller, "snap", [0]).catch((e: unknown) => e);
    expect((notNode as StatusError).status).toBe("PERMISSION_DENIED");
    expect((notNode as Error).message).toContain("only nodes copying data may");

    const b = channel(pki.node("node-b"));
    grants.add("gone@node-b");
    const missing = await readAll(b, "gone", [0]).catch((e: unknown) => e);
    expect(isSnapblockError(missing, "NOT_FOUND")).toBe(true);
    const past = await readAll(b, "snap", [1000]).catch((e: unknown) => e);
    expect(isSnapblockError(past, "OUT_OF_RANGE")).toBe(true);
    const badSize = await (async () => {
      for await (const _ of b.readChunks({ name: "snap", chunkSize: 3000, chunks: [0] })) void _;
    })().catch((e: unknown) => e);
    expect(isSnapblockError(badSize, "INVALID_ARGUMENT")).toBe(true);
    // After three refusals on it, the connection still serves.
    expect((await readAll(b, "snap", [0]))[0]!.data.equals(content.subarray(0, chunkSize))).toBe(true);
    expect((b as unknown as { idle: unknown[] }).idle).toHaveLength(1);
    expect(
      logLines.some((l) => l.includes('"transport":"chunk-channel"') && l.includes("PERMISSION_DENIED")),
    ).toBe(true);
  });

  it("refuses a request meant for another node, and requests that are not the protocol's", async () => {
    const b = pki.node("node-b");
    const elsewhere = await rawExchange(
      address,
      b,
      request({ to: "node-z", name: "snap", chunkSize, chunks: [0] }),
    );
    const e = errorOf(elsewhere.frames[0]);
    expect(e.status).toBe("FAILED_PRECONDITION");
    expect(e.message).toContain("serves node node-a, not node-z");

    const notJson = await rawExchange(address, b, request("{nope"));
    expect(errorOf(notJson.frames[0]).code).toBe("INVALID_ARGUMENT");
    const noChunks = await rawExchange(
      address,
      b,
      request({ to: "node-a", name: "snap", chunkSize, chunks: [-1] }),
    );
    expect(errorOf(noChunks.frames[0]).message).toContain("chunk numbers");

    // A length no request has: an error, then the server closes (nothing after it is framed).
    const huge = Buffer.alloc(4);
    huge.writeUInt32BE(0x7fffffff, 0);
    const oversized = await rawExchange(address, b, huge);
    expect(errorOf(oversized.frames[0]).code).toBe("INVALID_ARGUMENT");
    expect(oversized.closed).toBe(true);
  });

  it("checks the server's certificate names the node dialled, as the gRPC client does", async () => {
    const wrong = channel(pki.node("node-b"), "node-x");
    const err = await readAll(wrong, "snap", [0]).catch((e: unknown) => e);
    expect(isSnapblockError(err, "CLOSED")).toBe(true);
    expect((err as Error).message).toContain("not node/node-x");
  });

  it("a reader that stops early drops that connection; the next request gets a new one", async () => {
    const c = channel(pki.node("node-b"));
    for await (const item of c.readChunks({ name: "snap", chunkSize, chunks: [0, 1, 2, 4] })) {
      expect(item.chunk).toBe(0);
      break;
    }
    expect((c as unknown as { idle: unknown[] }).idle).toHaveLength(0);
    const got = await readAll(c, "snap", [1, 2]);
    expect(got.map((g) => g.chunk)).toEqual([1, 2]);
  });

  it("a node restarted on the same port: the client's kept connection is replaced, no error reaches the reader", async () => {
    const first = await EngineServer.start({ ...serverOptions(() => undefined), address: "127.0.0.1:0" });
    const at = `127.0.0.1:${first.port}`;
    const c = channel(pki.node("node-b"), "node-a", at);
    expect((await readAll(c, "snap", [0])).length).toBe(1);
    expect((c as unknown as { idle: unknown[] }).idle).toHaveLength(1);
    await first.shutdown(100);
    const second = await EngineServer.start({ ...serverOptions(() => undefined), address: at });
    try {
      const got = await readAll(c, "snap", [1, 4]);
      expect(got.map((g) => g.chunk)).toEqual([1, 4]);
    } finally {
      await second.shutdown(100);
    }
  });

  it("opens at most 16 connections to a node however many reads wait; a full server answers RESOURCE_EXHAUSTED and pulls go over gRPC", async () => {
    const c = channel(pki.node("node-b"));
    const counts = c as unknown as { open: number };
    let most = 0;
    const reads = Array.from({ length: 40 }, async (_, i) => {
      const got = await readAll(c, "snap", [i % 5]);
      most = Math.max(most, counts.open);
      return got;
    });
    const all = await Promise.all(reads);
    expect(all.every((g) => g.length === 1)).toBe(true);
    expect(most).toBeGreaterThan(1);
    expect(most).toBeLessThanOrEqual(16);

    // node-c holds 32 connections (the per-caller limit) that ask nothing; its next one is refused
    // with RESOURCE_EXHAUSTED, and HolderContent reads that request over gRPC instead.
    grants.add("snap@node-c");
    const cert = pki.node("node-c");
    const held = await Promise.all(Array.from({ length: 32 }, () => rawConnect(address, cert)));
    try {
      await new Promise((r) => setTimeout(r, 100)); // the server has counted them
      const refused = await readAll(channel(cert), "snap", [0]).catch((e: unknown) => e);
      expect((refused as StatusError).status).toBe("RESOURCE_EXHAUSTED");
      const holderLog: string[] = [];
      const holders = new HolderContent({
        transport: { tls: cert },
        logger: createLogger({ level: "debug", write: (line) => holderLog.push(line) }),
        callTimeoutMs: 5000,
      });
      closers.push(() => holders.close());
      const got = new Map<number, Buffer | null>();
      const fetcher = holders.fetcher([{ nodeId: "node-a", address, name: "snap" }], chunkSize);
      for await (const { chunk, data } of fetcher.fetch([0, 3])) got.set(chunk, data);
      expect(got.get(0)!.equals(content.subarray(0, chunkSize))).toBe(true);
      expect(got.get(3)).toBeNull();
      expect(holderLog.some((l) => l.includes("chunk channel is full"))).toBe(true);
    } finally {
      for (const s of held) s.destroy();
    }
  });

  it("a node without the channel answers gRPC only: the client says so, and HolderContent pulls over gRPC", async () => {
    const at = `127.0.0.1:${grpcOnly.port}`;
    const c = channel(pki.node("node-b"), "node-a", at);
    const err = await readAll(c, "snap", [0]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ChunkChannelUnsupported);

    const holderLog: string[] = [];
    for (const [where, expectFallback] of [
      [at, true],
      [address, false],
    ] as const) {
      holderLog.length = 0;
      const holders = new HolderContent({
        transport: { tls: pki.node("node-b") },
        logger: createLogger({ level: "debug", write: (line) => holderLog.push(line) }),
        callTimeoutMs: 5000,
      });
      closers.push(() => holders.close());
      const fetcher = holders.fetcher([{ nodeId: "node-a", address: where, name: "snap" }], chunkSize);
      const got = new Map<number, Buffer | null>();
      for (let round = 0; round < 2; round++) {
        for await (const { chunk, data } of fetcher.fetch([0, 1, 2, 3, 4])) got.set(chunk, data);
      }
      expect([...got.keys()].sort()).toEqual([0, 1, 2, 3, 4]);
      expect(got.get(3)).toBeNull();
      for (const c2 of [0, 1, 2, 4]) {
        expect(got.get(c2)!.equals(content.subarray(c2 * chunkSize, (c2 + 1) * chunkSize))).toBe(true);
      }
      // The fallback is found once and remembered.
      expect(holderLog.filter((l) => l.includes("has no chunk channel"))).toHaveLength(
        expectFallback ? 1 : 0,
      );
    }
  });
});
