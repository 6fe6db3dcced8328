/**
 * The NbdServer API: starting, listing and stopping exports, socket files and permissions,
 * clean shutdown (in-flight requests answered, backend flushed), stats and observer hooks.
 */
import { promises as fs } from "node:fs";
import net from "node:net";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { isSnapblockError } from "../../pkg/errors/index.js";
import { NbdServer, type NbdObserver } from "../../pkg/nbd/index.js";
import { makeTempDir, run, serveMemory, sleep } from "./harness.js";
import { MemoryBackend } from "./memory-backend.js";
import { CMD, ERRNO, RawNbdClient } from "./raw-client.js";
import { silentLogger } from "../../pkg/log/index.js";

const MiB = 1024 * 1024;
const dirs: string[] = [];
const servers: NbdServer[] = [];

async function tempDir(): Promise<string> {
  const dir = await makeTempDir();
  dirs.push(dir);
  return dir;
}

function newServer(observer?: NbdObserver): NbdServer {
  const server = new NbdServer({ logger: silentLogger, ...(observer === undefined ? {} : { observer }) });
  servers.push(server);
  return server;
}

afterEach(async () => {
  await Promise.allSettled(servers.splice(0).map((s) => s.shutdown()));
  await Promise.all(dirs.splice(0).map((d) => fs.rm(d, { recursive: true, force: true })));
});

describe("NbdServer", () => {
  it("creates the socket owner-only and lists exports and connections", async () => {
    const dir = await tempDir();
    const server = newServer();
    const socketPath = path.join(dir, "vol.sock");
    const info = await server.startExport({
      backend: new MemoryBackend({ name: "vol-1", size: MiB }),
      listen: { socketPath },
    });
    expect(info).toMatchObject({
      name: "vol-1",
      readOnly: false,
      multiConn: true,
      size: MiB,
      state: "serving",
    });
    expect(info.uri).toBe(`nbd+unix:///vol-1?socket=${socketPath}`);
    const stat = await fs.lstat(socketPath);
    expect(stat.isSocket()).toBe(true);
    expect(stat.mode & 0o777).toBe(0o600);

    const { client } = await RawNbdClient.open(socketPath, { name: "vol-1" });
    await client.writeAt(0, Buffer.alloc(4096, 1));
    const connections = server.listConnections("vol-1");
    expect(connections).toHaveLength(1);
    expect(connections[0]).toMatchObject({
      exportName: "vol-1",
      phase: "transmission",
      structuredReplies: true,
    });
    expect(server.listExports().map((e) => [e.name, e.connections])).toEqual([["vol-1", 1]]);
    const stats = server.stats();
    expect(stats).toMatchObject({ exports: 1, connections: 1, bytesWritten: 4096 });
    expect(stats.requests.write).toBe(1);

    await client.disconnect();
    await client.closesWithin(2000);
    await sleep(20);
    expect(server.listConnections()).toEqual([]);
    await server.stopExport("vol-1");
    await expect(fs.lstat(socketPath)).rejects.toMatchObject({ code: "ENOENT" });
    expect(server.listExports()).toEqual([]);
    expect(server.stats().exports).toBe(0);
  });

  it("stops an export cleanly: in-flight requests complete, later ones get ESHUTDOWN, then a flush", async () => {
    const dir = await tempDir();
    const events: string[] = [];
    const server = newServer({
      connectionClosed: () => events.push("closed"),
      exportStopped: () => events.push("stopped"),
    });
    // Each write takes 1.5-2 s, so all eight are still executing once the last has arrived, even
    // when sending 8 MiB takes a loaded machine a while (100-200 ms was seen to be too short).
    const backend = new MemoryBackend({
      name: "vol",
      size: 16 * MiB,
      minLatencyMs: 1500,
      maxLatencyMs: 2000,
    });
    const socketPath = path.join(dir, "s");
    await server.startExport({ backend, listen: { socketPath } });
    const { client } = await RawNbdClient.open(socketPath);
    const writes = Array.from({ length: 8 }, (_, i) => client.writeAt(i * MiB, Buffer.alloc(MiB, i + 1)));
    // Wait until the server is executing all eight writes.
    const until = Date.now() + 10_000;
    while ((server.listConnections("vol")[0]?.inFlightRequests ?? 0) < 8) {
      if (Date.now() > until) throw new Error("the eight writes were never in flight together");
      await sleep(2);
    }
    const flushesBefore = backend.counters.flushes;
    const stopping = server.stopExport("vol");
    await sleep(5);
    const late = client.readAt(0, 10);
    const results = await Promise.all(writes);
    expect(results.map((r) => r.error)).toEqual(Array(8).fill(0));
    // A request arriving while in-flight requests drain is refused (proto.md: SHOULD be ESHUTDOWN).
    expect((await late).error).toBe(ERRNO.ESHUTDOWN);
    await stopping;
    expect(backend.counters.flushes).toBe(flushesBefore + 1);
    expect(await client.closesWithin(1000)).toBe(true);
    expect(events).toEqual(["closed", "stopped"]);
    for (let i = 0; i < 8; i += 1) expect(backend.snapshot()[i * MiB]).toBe(i + 1);
  });

  it("refuses options while stopping and closes handshaking clients", async () => {
    const dir = await tempDir();
    const server = newServer();
    const socketPath = path.join(dir, "s");
    await server.startExport({
      backend: new MemoryBackend({ name: "vol", size: MiB }),
      listen: { socketPath },
    });
    const client = await RawNbdClient.connect(socketPath);
    await client.handshake();
    await server.stopExport("vol");
    expect(await client.closesWithin(1000)).toBe(true);
  });

  it("rejects duplicate names and addresses, and read-write exports of read-only backends", async () => {
    const dir = await tempDir();
    const server = newServer();
    const a = path.join(dir, "a");
    await server.startExport({
      backend: new MemoryBackend({ name: "vol", size: MiB }),
      listen: { socketPath: a },
    });
    await expect(
      server.startExport({
        backend: new MemoryBackend({ name: "vol", size: MiB }),
        listen: { socketPath: path.join(dir, "b") },
      }),
    ).rejects.toMatchObject({ code: "ALREADY_EXISTS" });
    await expect(
      server.startExport({
        backend: new MemoryBackend({ name: "other", size: MiB }),
        listen: { socketPath: a },
      }),
    ).rejects.toMatchObject({ code: "ALREADY_EXISTS" });
    await expect(
      server.startExport({
        backend: new MemoryBackend({ name: "snap", size: MiB, readOnly: true }),
        listen: { socketPath: path.join(dir, "c") },
        readOnly: false,
      }),
    ).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await expect(server.stopExport("nope")).rejects.toMatchObject({ code: "NOT_FOUND" });
    await expect(
      server.startExport({
        backend: new MemoryBackend({ name: "long", size: MiB }),
        listen: { socketPath: path.join(dir, "x".repeat(120)) },
      }),
    ).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    // The failed starts released their names.
    const info = await server.startExport({
      backend: new MemoryBackend({ name: "snap", size: MiB, readOnly: true }),
      listen: { socketPath: path.join(dir, "c") },
    });
    expect(info.readOnly).toBe(true);
  });

  it("replaces a stale socket file but never a live socket or a regular file", async () => {
    const dir = await tempDir();
    const server = newServer();
    const live = path.join(dir, "live");
    const liveServer = net.createServer();
    await new Promise<void>((resolve) => liveServer.listen(live, resolve));
    const regular = path.join(dir, "regular");
    await fs.writeFile(regular, "keep me");
    // A socket file whose process died (SIGKILL: nothing unlinked it).
    const stale = path.join(dir, "stale");
    const script = `require("net").createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, "SIGKILL"))`;
    await run(process.execPath, ["-e", script]);
    expect((await fs.lstat(stale)).isSocket()).toBe(true);

    try {
      await expect(
        server.startExport({
          backend: new MemoryBackend({ name: "a", size: MiB }),
          listen: { socketPath: live },
        }),
      ).rejects.toMatchObject({ code: "BUSY" });
      await expect(
        server.startExport({
          backend: new MemoryBackend({ name: "b", size: MiB }),
          listen: { socketPath: regular },
        }),
      ).rejects.toMatchObject({ code: "ALREADY_EXISTS" });
      expect(await fs.readFile(regular, "utf8")).toBe("keep me");
      const info = await server.startExport({
        backend: new MemoryBackend({ name: "c", size: MiB }),
        listen: { socketPath: stale },
      });
      expect(info.state).toBe("serving");
      const { client } = await RawNbdClient.open(stale);
      await client.disconnect();
    } finally {
      liveServer.close();
    }
  });

  it("serves over TCP only when asked to", async () => {
    const server = newServer();
    const info = await server.startExport({
      backend: new MemoryBackend({ name: "tcp-vol", size: MiB }),
      listen: { host: "127.0.0.1", port: 0 },
    });
    expect(info.address.kind).toBe("tcp");
    const port = info.address.kind === "tcp" ? info.address.port : 0;
    expect(info.uri).toBe(`nbd://127.0.0.1:${port}/tcp-vol`);
    const { client, details } = await RawNbdClient.open({ host: "127.0.0.1", port });
    expect(details.size).toBe(MiB);
    expect((await client.writeAt(0, Buffer.alloc(10, 1))).error).toBe(0);
    await client.disconnect();
  });

  it("shuts down every export and refuses new ones afterwards", async () => {
    const dir = await tempDir();
    const server = newServer();
    for (const name of ["a", "b", "c"]) {
      await server.startExport({
        backend: new MemoryBackend({ name, size: MiB }),
        listen: { socketPath: path.join(dir, name) },
      });
    }
    const { client } = await RawNbdClient.open(path.join(dir, "b"));
    await server.shutdown();
    expect(await client.closesWithin(1000)).toBe(true);
    expect(server.listExports()).toEqual([]);
    expect(await fs.readdir(dir)).toEqual([]);
    const error: unknown = await server
      .startExport({
        backend: new MemoryBackend({ name: "d", size: MiB }),
        listen: { socketPath: path.join(dir, "d") },
      })
      .catch((err: unknown) => err);
    expect(isSnapblockError(error, "CLOSED")).toBe(true);
  });

  it("does not leave behind an export whose start raced with shutdown", async () => {
    const dir = await tempDir();
    const server = newServer();
    const socketPath = path.join(dir, "racing");
    const starting = server.startExport({
      backend: new MemoryBackend({ name: "r", size: MiB }),
      listen: { socketPath },
    });
    await server.shutdown();
    await expect(starting).rejects.toMatchObject({ code: "CLOSED" });
    expect(server.listExports()).toEqual([]);
    await expect(fs.lstat(socketPath)).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("reports a failed final flush when stopping", async () => {
    const t = await serveMemory({ size: MiB });
    try {
      t.backend.failWith = new Error("disk gone");
      await expect(t.server.stopExport("vol")).rejects.toMatchObject({ code: "IO" });
    } finally {
      t.backend.failWith = undefined;
      await t.cleanup();
    }
  });

  it("keeps serving when an observer hook throws", async () => {
    const t = await serveMemory({
      size: MiB,
      observer: {
        requestStarted: () => {
          throw new Error("metrics bug");
        },
      },
    });
    try {
      const { client } = await RawNbdClient.open(t.socketPath);
      expect((await client.writeAt(0, Buffer.alloc(8, 1))).error).toBe(0);
      expect((await client.send({ type: CMD.FLUSH, offset: 0, length: 0 })).error).toBe(0);
      await client.disconnect();
    } finally {
      await t.cleanup();
    }
  });
});
