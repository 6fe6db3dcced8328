import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import net from "node:net";
import tls from "node:tls";
import path from "node:path";
import { Metadata, credentials, type Client, type ServiceError } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SnapblockError, isSnapblockError } from "../../pkg/errors/index.js";
import { makeTestPki, type TestPki } from "./test-certs.js";
import { createLogger, silentLogger } from "../../pkg/log/index.js";
import { toGrpcStatus } from "../../pkg/rpc/index.js";
import { LocalEngine, type VolumeQuiescer } from "../../pkg/engine-api/index.js";
import {
  EngineServer,
  RemoteEngine,
  loadEngineProto,
  type SnapshotChunk,
} from "../../pkg/engine-service/index.js";

const MiB = 2 ** 20;

describe("engine service over mutual TLS", () => {
  let dir: string;
  let pki: TestPki;
  let engine: LocalEngine;
  let server: EngineServer;
  let address: string;
  const clients: RemoteEngine[] = [];
  const logLines: string[] = [];
  const grants = new Set<string>();

  const remote = (tls: { caFile: string; certFile: string; keyFile: string }): RemoteEngine => {
    const r = new RemoteEngine({ nodeId: "node-a", address, transport: { tls }, callTimeoutMs: 5000 });
    clients.push(r);
    return r;
  };

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "snapblock-engine-svc-"));
    pki = makeTestPki(dir);
    engine = new LocalEngine({
      nodeId: "node-a",
      poolDir: path.join(dir, "pool"),
      metadataFile: path.join(dir, "meta.json"),
      createIfMissing: { sizeBytes: 64 * MiB },
    });
    await engine.open();
    server = await EngineServer.start({
      engine,
      snapshots: engine,
      pointPins: engine,
      address: "127.0.0.1:0",
      transport: { tls: pki.node("node-a") },
      version: "test",
      logger: createLogger({ level: "debug", write: (line) => logLines.push(line) }),
      pullGrants: { allows: (snapshot, nodeId) => grants.has(`${snapshot}@${nodeId}`) },
    });
    address = `127.0.0.1:${server.port}`;
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    await server.shutdown(1000);
    await engine.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("serves every engine operation to a client with a certificate from the engine CA", async () => {
    const r = remote(pki.controller);
    expect(await r.nodeInfo()).toMatchObject({ nodeId: "node-a", ready: true, version: "test" });
    const v = await r.createVolume({ name: "vol-1", sizeBytes: 4 * MiB, meta: { "csi.name": "pvc one" } });
    expect(v).toMatchObject({ name: "vol-1", sizeBytes: 4 * MiB, meta: { "csi.name": "pvc one" } });
    expect(v.createdAt).toBeInstanceOf(Date);
    expect(await r.getVolume("vol-1")).toEqual(v);
    expect(await r.getVolume("nope")).toBeUndefined();
    expect((await r.resizeVolume("vol-1", 8 * MiB)).sizeBytes).toBe(8 * MiB);

    // Three chunks of data, so that the full copy below has something to copy.
    const dev = engine.openVolumeDevice("vol-1");
    await dev.write(0, Buffer.alloc(dev.chunkSize * 2, 0x11));
    await dev.write(4 * MiB, Buffer.alloc(dev.chunkSize, 0x22));
    await dev.flush();
    dev.close();

    const s = await r.createSnapshot({ volume: "vol-1", name: "snap-1", meta: { k: "v" } });
    expect(s).toMatchObject({ name: "snap-1", sourceVolume: "vol-1", sizeBytes: 8 * MiB, meta: { k: "v" } });
    expect(await r.getSnapshot("snap-1")).toEqual(s);
    const restored = await r.createVolume({
      name: "vol-2",
      sizeBytes: 8 * MiB,
      meta: {},
      source: { kind: "snapshot", name: "snap-1" },
      fullCopy: true,
    });
    expect(restored.source).toEqual({ kind: "snapshot", name: "snap-1" });
    expect(restored.copy?.state).toMatch(/^(running|done)$/);
    // The copy's progress reaches the client: three chunks, all copied.
    let copy = restored.copy;
    const deadline = Date.now() + 60_000;
    while (copy?.state === "running" && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
      copy = (await r.getVolume("vol-2"))?.copy;
    }
    expect(copy).toEqual({ state: "done", copiedChunks: 3, totalChunks: 3 });
    const clone = await r.createVolume({
      name: "vol-3",
      sizeBytes: 8 * MiB,
      meta: {},
      source: { kind: "volume", name: "vol-1" },
    });
    expect(clone.source).toEqual({ kind: "volume", name: "vol-1" });

    const volumes = await r.listVolumes();
    expect(volumes.items.map((x) => x.name).sort()).toEqual(["vol-1", "vol-2", "vol-3"]);
    expect(volumes.idWatermark).toBeGreaterThan(Math.max(...volumes.items.map((x) => x.id)));
    expect((await r.listSnapshots()).items.map((x) => x.name)).toEqual(["snap-1"]);
    const cap = await r.capacity();
    expect(cap).toEqual(await engine.capacity());

    await r.deleteVolume("vol-3");
    expect(await r.getVolume("vol-3")).toBeUndefined();
  });

  it("sets a volume's protection policy for the controller, at creation and after", async () => {
    const r = remote(pki.controller);
    const v = await r.createVolume({ name: "guarded", sizeBytes: MiB, meta: {}, protection: "60s for 1h" });
    expect(v.protection).toBe("1m for 1h");
    expect((await r.setProtection("guarded", "1s for 10m, 1m for 1h")).protection).toBe(
      "1s for 10m, 1m for 1h",
    );
    expect((await engine.getVolume("guarded"))?.protection).toBe("1s for 10m, 1m for 1h");
    const bad = await r.setProtection("guarded", "1h for 1m").catch((e: unknown) => e);
    expect(isSnapblockError(bad, "INVALID_ARGUMENT")).toBe(true);
    const missing = await r.setProtection("nope", "off").catch((e: unknown) => e);
    expect(isSnapblockError(missing, "NOT_FOUND")).toBe(true);
    // A bad policy at creation makes nothing.
    const refused = await r
      .createVolume({ name: "unguarded", sizeBytes: MiB, meta: {}, protection: "soon" })
      .catch((e: unknown) => e);
    expect(isSnapblockError(refused, "INVALID_ARGUMENT")).toBe(true);
    expect(await r.getVolume("unguarded")).toBeUndefined();
    expect((await r.setProtection("guarded", "off")).protection).toBeUndefined();
  });

  it("carries engine errors back as the same SnapblockError codes (and thus the same CSI statuses)", async () => {
    const r = remote(pki.controller);
    await r.createVolume({ name: "dup", sizeBytes: MiB, meta: {} });
    const dup = await r.createVolume({ name: "dup", sizeBytes: MiB, meta: {} }).catch((e: unknown) => e);
    expect(isSnapblockError(dup, "ALREADY_EXISTS")).toBe(true);
    const missing = await r.deleteVolume("missing").catch((e: unknown) => e);
    expect(isSnapblockError(missing, "NOT_FOUND")).toBe(true);
    const shrink = await r.resizeVolume("dup", 4096).catch((e: unknown) => e);
    const local = await engine.resizeVolume("dup", 4096).catch((e: unknown) => e);
    expect(isSnapblockError(shrink)).toBe(true);
    expect(toGrpcStatus(shrink).code).toBe(toGrpcStatus(local).code);
    expect((shrink as Error).message).toBe((local as Error).message);
  });

  it("refuses metadata beyond the bounds (INVALID_ARGUMENT) and writes none of it", async () => {
    const r = remote(pki.controller);
    // The metadata is kept in the pool's journal (annotations): none of the refused maps reached it.
    const journal = path.join(dir, "pool", "journal");
    const huge = { "csi.name": "x".repeat(3 * MiB) };
    const refusals = [
      await r.createVolume({ name: "meta-huge", sizeBytes: MiB, meta: huge }).catch((e: unknown) => e),
      await r
        .createVolume({ name: "meta-key", sizeBytes: MiB, meta: { ["k".repeat(129)]: "v" } })
        .catch((e: unknown) => e),
    ];
    await r.createVolume({
      name: "meta-ok",
      sizeBytes: MiB,
      meta: { ["k".repeat(128)]: "v".repeat(16_000) },
    });
    refusals.push(
      await r.createSnapshot({ volume: "meta-ok", name: "meta-snap", meta: huge }).catch((e: unknown) => e),
    );
    for (const err of refusals) {
      expect(isSnapblockError(err, "INVALID_ARGUMENT"), String(err)).toBe(true);
      expect(toGrpcStatus(err).codeName).toBe("INVALID_ARGUMENT");
    }
    expect((refusals[0] as Error).message).toMatch(/more than 16384/);
    expect((refusals[1] as Error).message).toMatch(/129 bytes, more than 128/);
    expect(await r.getVolume("meta-huge")).toBeUndefined();
    expect(await r.getSnapshot("meta-snap")).toBeUndefined();
    expect(statSync(journal).size).toBeLessThan(64 * 1024);
    await r.deleteVolume("meta-ok");
  });

  it("streams a snapshot's allocated chunks, skipping holes, to a node the controller asked to copy it", async () => {
    const r = remote(pki.controller);
    const puller = remote(pki.node("node-b"));
    await r.createVolume({ name: "data", sizeBytes: 4 * MiB, meta: {} });
    const dev = engine.openVolumeDevice("data");
    const a = Buffer.alloc(dev.chunkSize, 0xab);
    const b = Buffer.alloc(dev.chunkSize * 3, 0xcd);
    await dev.write(0, a);
    await dev.write(2 * MiB, b);
    await dev.flush();
    dev.close();
    await r.createSnapshot({ volume: "data", name: "data-snap", meta: {} });
    grants.add("data-snap@node-b");
    const chunks: SnapshotChunk[] = [];
    for await (const c of puller.readSnapshotChunks("data-snap", dev.chunkSize * 2)) chunks.push(c);
    expect(chunks[0]).toMatchObject({ offset: 0, snapshotSizeBytes: 4 * MiB, chunkSize: dev.chunkSize });
    expect(chunks.map((c) => [c.offset, c.data.length])).toEqual([
      [0, dev.chunkSize],
      [2 * MiB, 2 * dev.chunkSize],
      [2 * MiB + 2 * dev.chunkSize, dev.chunkSize],
    ]);
    expect(Buffer.concat(chunks.slice(1).map((c) => c.data)).equals(b)).toBe(true);
    grants.add("no-such-snap@node-b");
    const missing = await (async () => {
      for await (const _ of puller.readSnapshotChunks("no-such-snap")) void _;
    })().catch((e: unknown) => e);
    expect(isSnapblockError(missing, "NOT_FOUND")).toBe(true);
  });

  it("lists a snapshot's block metadata to the controller page by page, as the engine computes it", async () => {
    const r = remote(pki.controller);
    await r.createVolume({ name: "cbt", sizeBytes: 8 * MiB, meta: {} });
    const dev = engine.openVolumeDevice("cbt");
    const cs = dev.chunkSize;
    await dev.write(0, Buffer.alloc(cs, 1));
    await dev.write(3 * MiB, Buffer.alloc(2 * cs, 2));
    await r.createSnapshot({ volume: "cbt", name: "cbt-1", meta: {} });
    for (let i = 0; i < 12; i++) await dev.write(4 * MiB + i * 2 * cs + 4096, Buffer.alloc(4096, 3 + i));
    dev.close();
    await r.createSnapshot({ volume: "cbt", name: "cbt-2", meta: {} });
    const collect = async (
      e: { blockMetadata: LocalEngine["blockMetadata"] },
      request: Parameters<LocalEngine["blockMetadata"]>[0],
    ) => {
      const pages = [];
      for await (const p of e.blockMetadata(request)) pages.push(p);
      return pages;
    };
    const delta = { snapshot: "cbt-2", baseSnapshot: "cbt-1", startingOffset: 0, maxResults: 5 };
    const remotePages = await collect(r, delta);
    expect(remotePages).toEqual(await collect(engine, delta));
    expect(remotePages.map((p) => p.ranges.length)).toEqual([5, 5, 2]);
    expect(remotePages.every((p) => p.sizeBytes === 8 * MiB)).toBe(true);
    expect(remotePages[0]!.ranges[0]).toEqual({ offset: 4 * MiB + 4096, length: 4096 });
    const allocated = await collect(r, { snapshot: "cbt-1", startingOffset: cs / 2, maxResults: 100 });
    expect(allocated).toEqual([
      {
        sizeBytes: 8 * MiB,
        ranges: [
          { offset: cs / 2, length: cs / 2 },
          { offset: 3 * MiB, length: 2 * cs },
        ],
      },
    ]);
    // Nothing at all: still one page, with the size.
    expect(await collect(r, { snapshot: "cbt-1", startingOffset: 8 * MiB, maxResults: 1 })).toEqual([
      { sizeBytes: 8 * MiB, ranges: [] },
    ]);
    // The engine's errors arrive as the same codes.
    const codeOf = (request: Parameters<LocalEngine["blockMetadata"]>[0]) =>
      collect(r, request).then(
        () => "OK",
        (e: unknown) => (isSnapblockError(e) ? e.code : String(e)),
      );
    await r.createVolume({ name: "other", sizeBytes: MiB, meta: {} });
    await r.createSnapshot({ volume: "other", name: "other-1", meta: {} });
    expect(await codeOf({ snapshot: "nope", startingOffset: 0, maxResults: 1 })).toBe("NOT_FOUND");
    expect(
      await codeOf({ snapshot: "cbt-2", baseSnapshot: "other-1", startingOffset: 0, maxResults: 1 }),
    ).toBe("INVALID_ARGUMENT");
    expect(await codeOf({ snapshot: "cbt-2", startingOffset: 8 * MiB + 1, maxResults: 1 })).toBe(
      "OUT_OF_RANGE",
    );
    expect(await codeOf({ snapshot: "cbt-2", startingOffset: 0, maxResults: 0 })).toBe("INVALID_ARGUMENT");
  });

  it("refuses, in the handshake, a node whose certificate names another node than the one dialled", async () => {
    const wrong = new RemoteEngine({
      nodeId: "node-b",
      address,
      transport: { tls: pki.controller },
      callTimeoutMs: 5000,
    });
    clients.push(wrong);
    const err = await wrong
      .createVolume({ name: "misrouted", sizeBytes: MiB, meta: {} })
      .catch((e: unknown) => e);
    expect(toGrpcStatus(err).codeName).toBe("UNAVAILABLE");
    expect((err as Error).message).toMatch(/certificate for node\/node-a, not node\/node-b/);
    expect(await engine.getVolume("misrouted")).toBeUndefined();
  });

  it("refuses a client without a certificate", async () => {
    const { Client: EngineClient } = loadEngineProto();
    // The certificate's name, not the IP, as TLS server name (an IP there is DEP0123, RFC 6066).
    const bare = new EngineClient(address, credentials.createSsl(readFileSync(pki.controller.caFile)), {
      "grpc.ssl_target_name_override": "localhost",
    });
    const err = await unaryCall(bare, "GetNodeInfo");
    bare.close();
    expect(err?.code).toBe(14); // UNAVAILABLE: the handshake fails, no call reaches the engine
  });

  it("refuses a client whose certificate comes from another CA, naming the node", async () => {
    const r = remote({
      caFile: pki.controller.caFile,
      certFile: pki.stranger.certFile,
      keyFile: pki.stranger.keyFile,
    });
    const err = await r.capacity().catch((e: unknown) => e);
    expect(isSnapblockError(err, "CLOSED")).toBe(true);
    expect((err as Error).message).toContain("node node-a");
    expect(toGrpcStatus(err).codeName).toBe("UNAVAILABLE");
    expect(r.isReady()).toBe(false);
  });

  it("carries the freeze flag to the node's quiescer; a quiesce that fails leaves no snapshot", async () => {
    const r = remote(pki.controller);
    await r.createVolume({ name: "vol-freeze", sizeBytes: 4 * MiB, meta: {} });
    const quiesced: string[] = [];
    let failAfter = false;
    // The node side's hook as LocalEngine sees it (NbdNodeVolumes freezes a staged filesystem;
    // the real freeze is tested with mounts in test/csi/consistent-snapshots.test.ts).
    const quiescer: VolumeQuiescer = {
      async quiesce<T>(volume: string, fn: () => Promise<T>): Promise<T> {
        quiesced.push(volume);
        const value = await fn();
        if (failAfter) throw new SnapblockError("CANCELLED", "thawed before the snapshot finished");
        return value;
      },
    };
    engine.useQuiescer(quiescer);
    try {
      await r.createSnapshot({ volume: "vol-freeze", name: "snap-frozen", meta: {} });
      expect(quiesced).toEqual(["vol-freeze"]);
      await r.createSnapshot({ volume: "vol-freeze", name: "snap-as-is", meta: {}, freezeFilesystem: false });
      expect(quiesced).toEqual(["vol-freeze"]);
      failAfter = true;
      const err = await r.createSnapshot({ volume: "vol-freeze", name: "snap-thawed-early", meta: {} }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isSnapblockError(err, "CANCELLED")).toBe(true);
      expect(quiesced).toEqual(["vol-freeze", "vol-freeze"]);
      // The snapshot taken after the early thaw was discarded, metadata and all.
      expect(await r.getSnapshot("snap-thawed-early")).toBeUndefined();
      expect(await r.getSnapshot("snap-frozen")).toBeDefined();
    } finally {
      engine.useQuiescer({ quiesce: (_volume, fn) => fn() });
    }
  });

  it("refuses a plaintext client", async () => {
    const { Client: EngineClient } = loadEngineProto();
    const plain = new EngineClient(address, credentials.createInsecure());
    const err = await unaryCall(plain, "GetNodeInfo");
    plain.close();
    expect(err?.code).toBe(14);
  });

  it("pins a recovery point for the controller: idempotent, listed as pinned, errors as the engine's", async () => {
    const r = remote(pki.controller);
    await r.createVolume({ name: "pin-me", sizeBytes: MiB, meta: {}, protection: "1s for 1m" });
    let point: string | undefined;
    const until = Date.now() + 20_000;
    while (!point) {
      point = (await r.listSnapshots()).items.find((s) => s.sourceVolume === "pin-me")?.name;
      if (!point && Date.now() > until) throw new Error("no recovery point within 20 s");
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect((await r.getSnapshot(point))?.pinned).toBeUndefined();
    for (let i = 0; i < 2; i++) expect((await r.pinPoint(point, true)).pinned).toBe(true);
    expect((await r.getSnapshot(point))?.pinned).toBe(true);
    expect((await r.listSnapshots()).items.find((s) => s.name === point)?.pinned).toBe(true);
    expect((await engine.getSnapshot(point))?.pinned).toBe(true);
    expect((await r.pinPoint(point, false)).pinned).toBeUndefined();
    expect((await engine.getSnapshot(point))?.pinned).toBeUndefined();
    await r.createSnapshot({ volume: "pin-me", name: "pin-me-snap", meta: {} });
    const notPoint = await r.pinPoint("pin-me-snap", true).catch((e: unknown) => e);
    expect(toGrpcStatus(notPoint).codeName).toBe("INVALID_ARGUMENT");
    const missing = await r.pinPoint("rp--no-such-point", true).catch((e: unknown) => e);
    expect(toGrpcStatus(missing).codeName).toBe("NOT_FOUND");
    await r.deleteVolume("pin-me");
  });

  it("a client that does not trust the node's CA refuses the node", async () => {
    const r = remote(pki.stranger);
    const err = await r.capacity().catch((e: unknown) => e);
    expect(isSnapblockError(err, "CLOSED")).toBe(true);
  });

  it("lets a node's certificate do nothing a node does not need on another node (PERMISSION_DENIED)", async () => {
    const r = remote(pki.controller);
    await r.createVolume({ name: "victim", sizeBytes: MiB, meta: {} });
    await r.createSnapshot({ volume: "victim", name: "victim-snap", meta: {} });
    const intruder = remote(pki.node("node-b"));
    const attempts: Array<[string, () => Promise<unknown>]> = [
      ["ListVolumes", () => intruder.listVolumes()],
      ["CreateVolume", () => intruder.createVolume({ name: "planted", sizeBytes: MiB, meta: {} })],
      ["DeleteSnapshot", () => intruder.deleteSnapshot("victim-snap")],
      ["DeleteVolume", () => intruder.deleteVolume("victim")],
      ["GetCapacity", () => intruder.capacity()],
      ["SetProtection", () => intruder.setProtection("victim", "off")],
      // Unpinning a point would let its node thin it under a user's VolumeSnapshot.
      ["PinPoint", () => intruder.pinPoint("victim-snap", false)],
      [
        "ReadSnapshotChunks",
        async () => {
          for await (const _ of intruder.readSnapshotChunks("victim-snap")) void _;
        },
      ],
      [
        "ListBlockMetadata",
        async () => {
          for await (const _ of intruder.blockMetadata({
            snapshot: "victim-snap",
            startingOffset: 0,
            maxResults: 9,
          }))
            void _;
        },
      ],
    ];
    for (const [method, attempt] of attempts) {
      const err = await attempt().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(toGrpcStatus(err).codeName, method).toBe("PERMISSION_DENIED");
      expect((err as Error).message, method).toMatch(/node\/node-b may not/);
    }
    expect(await engine.getVolume("victim")).toBeDefined();
    expect(await engine.getSnapshot("victim-snap")).toBeDefined();
    expect(await engine.getVolume("planted")).toBeUndefined();
    // Who called is on every line, refused or not.
    const refused = logLines
      .map((l) => JSON.parse(l) as { method?: string; caller?: string; code?: string })
      .filter((l) => l.caller === "node/node-b" && l.code === "PERMISSION_DENIED")
      .map((l) => l.method);
    expect(refused).toEqual(attempts.map(([m]) => m));
    expect(
      logLines.some((l) => l.includes('"caller":"controller"') && l.includes('"method":"CreateVolume"')),
    ).toBe(true);
  });

  it("the controller reads no data, and a certificate naming no identity may call nothing", async () => {
    const r = remote(pki.controller);
    grants.add("victim-snap@node-b");
    const err = await (async () => {
      for await (const _ of r.readSnapshotChunks("victim-snap")) void _;
    })().catch((e: unknown) => e);
    expect(toGrpcStatus(err).codeName).toBe("PERMISSION_DENIED");
    const anonymous = remote(pki.anonymous);
    const denied = await anonymous.nodeInfo().catch((e: unknown) => e);
    expect(toGrpcStatus(denied).codeName).toBe("PERMISSION_DENIED");
    expect((denied as Error).message).toMatch(/names no snapblock identity/);
    // Any identity may ask which node this is.
    expect((await remote(pki.node("node-c")).nodeInfo()).nodeId).toBe("node-a");
  });

  /** The refused-handshake log line naming this peer port; waits for it (it is written asynchronously). */
  const refusalOf = async (localPort: number): Promise<Record<string, unknown>> => {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const line = logLines
        .filter((l) => l.includes("refused a connection in the TLS handshake"))
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .find((l) => l.remote === `127.0.0.1:${localPort}`);
      if (line) return line;
      if (Date.now() > deadline) {
        throw new Error(`no refused-handshake line for 127.0.0.1:${localPort} in:\n${logLines.join("\n")}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };

  it("refuses TLS 1.2 (TLS 1.3 only: AEAD suites only) and logs refused handshakes", async () => {
    let localPort = 0;
    const tlsErr = await new Promise<Error>((resolve) => {
      const socket = tls.connect({
        host: "127.0.0.1",
        port: server.port,
        ca: readFileSync(pki.controller.caFile),
        cert: readFileSync(pki.controller.certFile),
        key: readFileSync(pki.controller.keyFile),
        maxVersion: "TLSv1.2",
        ciphers: "ECDHE-ECDSA-AES128-SHA",
        checkServerIdentity: () => undefined,
        ALPNProtocols: ["h2"],
      });
      socket.once("connect", () => (localPort = socket.localPort ?? 0));
      socket.once("secureConnect", () => {
        socket.destroy();
        resolve(new Error("TLS 1.2 was accepted"));
      });
      socket.once("error", resolve);
    });
    expect(tlsErr.message).not.toBe("TLS 1.2 was accepted");
    expect(localPort).toBeGreaterThan(0);
    expect(await refusalOf(localPort)).toMatchObject({ reason: "ERR_SSL_UNSUPPORTED_PROTOCOL" });
  });

  it("logs the address of a peer that resets in the handshake, and the verification error of a certificate from another CA", async () => {
    // A real ClientHello, recorded from Node's TLS client, is replayed on a plain TCP socket; the
    // server's answer proves it accepted the connection, then the peer resets. By the time Node
    // reports the refusal the peer is gone: the address must come from the connection as it was
    // accepted. (A peer that resets before the server has even accepted it cannot be named: the
    // kernel no longer knows the address then; the log says so.)
    const hello = await recordClientHello();
    for (let i = 0; i < 5; i++) {
      const port = await new Promise<number>((resolve, reject) => {
        const socket = net.connect(server.port, "127.0.0.1", () => socket.write(hello));
        socket.once("data", () => {
          const local = socket.localPort ?? 0;
          socket.resetAndDestroy();
          resolve(local);
        });
        socket.once("error", reject);
      });
      expect(await refusalOf(port)).toMatchObject({ reason: "ECONNRESET" });
    }
    let strangerPort = 0;
    await new Promise<void>((resolve) => {
      const socket = tls.connect({
        host: "127.0.0.1",
        port: server.port,
        ca: readFileSync(pki.controller.caFile),
        cert: readFileSync(pki.stranger.certFile),
        key: readFileSync(pki.stranger.keyFile),
        checkServerIdentity: () => undefined,
        ALPNProtocols: ["h2"],
      });
      socket.once("connect", () => (strangerPort = socket.localPort ?? 0));
      socket.once("close", () => resolve());
      socket.once("error", () => socket.destroy());
    });
    expect(await refusalOf(strangerPort)).toMatchObject({
      reason: expect.stringMatching(/CERT|SIGNATURE|ISSUER/) as unknown,
    });
  });
});

describe("engine service transport rules", () => {
  it("serves plaintext on loopback when asked to, and never elsewhere", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "snapblock-engine-plain-"));
    const engine = new LocalEngine({
      nodeId: "node-p",
      poolDir: path.join(dir, "pool"),
      metadataFile: path.join(dir, "meta.json"),
      createIfMissing: { sizeBytes: 64 * MiB },
    });
    await engine.open();
    const base = { engine, version: "test", logger: silentLogger };
    try {
      const server = await EngineServer.start({
        ...base,
        address: "127.0.0.1:0",
        transport: { insecureLoopback: true },
      });
      const r = new RemoteEngine({
        nodeId: "node-p",
        address: `127.0.0.1:${server.port}`,
        transport: { insecureLoopback: true },
      });
      expect((await r.nodeInfo()).nodeId).toBe("node-p");
      r.close();
      // Without certificates the addressee header still keeps a misrouted call out.
      const wrong = new RemoteEngine({
        nodeId: "node-q",
        address: `127.0.0.1:${server.port}`,
        transport: { insecureLoopback: true },
      });
      const err = await wrong
        .createVolume({ name: "misrouted", sizeBytes: MiB, meta: {} })
        .catch((e: unknown) => e);
      wrong.close();
      expect(toGrpcStatus(err).codeName).toBe("FAILED_PRECONDITION");
      expect((err as Error).message).toMatch(/serves node node-p, not node-q/);
      expect(await engine.getVolume("misrouted")).toBeUndefined();
      await server.shutdown(1000);

      for (const address of ["0.0.0.0:0", "10.1.2.3:0", "[::]:0"]) {
        await expect(
          EngineServer.start({ ...base, address, transport: { insecureLoopback: true } }),
        ).rejects.toThrow(/loopback only/);
      }
      await expect(EngineServer.start({ ...base, address: "127.0.0.1:0", transport: {} })).rejects.toThrow(
        /needs TLS files/,
      );
      expect(
        () =>
          new RemoteEngine({ nodeId: "x", address: "10.0.0.1:7000", transport: { insecureLoopback: true } }),
      ).toThrow(/loopback only/);
    } finally {
      await engine.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

function unaryCall(client: Client, method: string): Promise<ServiceError | undefined> {
  const fn = (client as unknown as Record<string, unknown>)[method] as (
    req: object,
    md: Metadata,
    opts: { deadline: Date },
    cb: (err: ServiceError | null) => void,
  ) => unknown;
  return new Promise((resolve) => {
    fn.call(client, {}, new Metadata(), { deadline: new Date(Date.now() + 5000) }, (err) =>
      resolve(err ?? undefined),
    );
  });
}

/** The first bytes Node's TLS client sends (its ClientHello), caught by a plain TCP listener. */
async function recordClientHello(): Promise<Buffer> {
  const catcher = net.createServer();
  await new Promise<void>((resolve) => catcher.listen(0, "127.0.0.1", resolve));
  try {
    const caught = new Promise<Buffer>((resolve) =>
      catcher.once("connection", (socket) =>
        socket.once("data", (data: Buffer) => {
          resolve(data);
          socket.destroy();
        }),
      ),
    );
    const client = tls.connect({
      host: "127.0.0.1",
      port: (catcher.address() as net.AddressInfo).port,
      ALPNProtocols: ["h2"],
      checkServerIdentity: () => undefined,
    });
    client.on("error", () => undefined); // the catcher hangs up: expected
    return await caught;
  } finally {
    catcher.close();
  }
}
