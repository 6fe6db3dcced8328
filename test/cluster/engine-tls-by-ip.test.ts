import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalEngine } from "../../pkg/engine-api/index.js";
import { EngineServer, RemoteEngine } from "../../pkg/engine-service/index.js";
import { silentLogger } from "../../pkg/log/index.js";
import { makeTestPki } from "./test-certs.js";

/**
 * A node plugin dialled by IP (its announced pod IP): the client checks the node's identity in
 * its certificate and does not send the IP as TLS server name (RFC 6066; Node's DEP0123
 * warning). Its own file: Node prints a deprecation once per process, so no other test may
 * connect first.
 */
const warnings: string[] = [];
process.on("warning", (w) => warnings.push(`${(w as { code?: string }).code ?? ""} ${w.message}`));

describe("engine service dialled by IP", () => {
  let dir: string;
  let engine: LocalEngine;
  let server: EngineServer;
  let client: RemoteEngine;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "sb-engine-ip-"));
    const pki = makeTestPki(dir);
    engine = new LocalEngine({
      nodeId: "node-a",
      poolDir: path.join(dir, "pool"),
      metadataFile: path.join(dir, "meta.json"),
      createIfMissing: { sizeBytes: 64 * 2 ** 20 },
    });
    await engine.open();
    server = await EngineServer.start({
      engine,
      snapshots: engine,
      address: "127.0.0.1:0",
      transport: { tls: pki.node("node-a") },
      version: "test",
      logger: silentLogger,
    });
    client = new RemoteEngine({
      nodeId: "node-a",
      address: `127.0.0.1:${server.port}`,
      transport: { tls: pki.controller },
      callTimeoutMs: 5000,
    });
  });
  afterAll(async () => {
    client.close();
    await server.shutdown(1000);
    await engine.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("connects over mutual TLS without sending the IP as server name", async () => {
    expect((await client.capacity()).totalBytes).toBeGreaterThan(0);
    await new Promise((r) => setImmediate(r));
    expect(warnings.filter((w) => w.includes("DEP0123") || w.includes("RFC 6066"))).toEqual([]);
  });
});
