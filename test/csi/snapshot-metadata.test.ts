/**
 * The CSI SnapshotMetadata service over a real unix socket, as the external-snapshot-metadata
 * sidecar calls it. Volumes and snapshots are made through the Controller service; the
 * snapshots' contents are read back through real NBD exports (nbdcopy) and compared with what
 * GetMetadataDelta and GetMetadataAllocated report.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, promises as fs } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { credentials, status, type Client, type ServiceError } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CsiServer,
  callCsi,
  connectCsi,
  controllerHandlers,
  identityHandlers,
  loadCsiProto,
  parseResourceId,
  snapshotMetadataHandlers,
  DEFAULT_MAX_RESULTS,
  type CsiClients,
} from "../../pkg/csi/index.js";
import { BLOCK, MiB, createSnapshot, createVolume } from "./csi-fixtures.js";
import { removeDataDir } from "./local-process.js";
import { silentLogger } from "../../pkg/log/index.js";
import { LocalEngine } from "../../pkg/engine-api/index.js";
import { NbdServer, exportUri } from "../../pkg/nbd/index.js";
import { Prng } from "../../pkg/engine/index.js";
import { missingCommands, runOk } from "../nbd/harness.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const KiB = 1024;
const CHUNK = 64 * KiB; // the pool's default chunk size

interface Range {
  byteOffset: number;
  sizeBytes: number;
}
interface MetadataResponse {
  blockMetadataType: string;
  volumeCapacityBytes: number;
  blockMetadata: Range[];
}

let dir: string;
let engine: LocalEngine;
let server: CsiServer;
let clients: CsiClients;
let metadata: Client;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "snapblock-csi-cbt-"));
  engine = new LocalEngine({
    nodeId: "local",
    poolDir: path.join(dir, "pool"),
    metadataFile: path.join(dir, "csi-metadata.json"),
    createIfMissing: { sizeBytes: 256 * MiB },
  });
  await engine.open();
  const logger = silentLogger;
  server = await CsiServer.start({
    socketPath: path.join(dir, "csi.sock"),
    logger,
    identity: identityHandlers({
      vendorVersion: "test",
      controller: true,
      snapshotMetadata: true,
      ready: () => engine.isReady(),
      logger,
    }),
    ...controllerHandlers({ engine, logger }),
    snapshotMetadata: snapshotMetadataHandlers({ engine, logger }),
  });
  clients = connectCsi(server.socketPath);
  const { SnapshotMetadata } = loadCsiProto().csi.v1;
  metadata = new SnapshotMetadata(`unix:${server.socketPath}`, credentials.createInsecure());
});

afterAll(async () => {
  metadata.close();
  clients.close();
  await server.shutdown();
  await engine.close();
  removeDataDir(dir);
});

/** Every message of a server stream, or the stream's error. */
async function stream(method: string, request: object): Promise<MetadataResponse[]> {
  const fn = (metadata as unknown as Record<string, (r: object) => AsyncIterable<MetadataResponse>>)[method]!;
  const out: MetadataResponse[] = [];
  for await (const m of fn.call(metadata, request)) out.push(m);
  return out;
}

async function codeOf(method: string, request: object): Promise<string> {
  try {
    await stream(method, request);
    return "OK";
  } catch (err) {
    return status[(err as ServiceError).code] ?? String(err);
  }
}

const ranges = (messages: MetadataResponse[]): Range[] => messages.flatMap((m) => m.blockMetadata);

/** A snapshot's whole content, read through a read-only NBD export with nbdcopy. */
async function readThroughNbd(snapshotId: string, size: number): Promise<Buffer> {
  const name = parseResourceId(snapshotId)!.engineName;
  const nbd = new NbdServer({ logger: silentLogger });
  const device = engine.openSnapshotDevice(name);
  try {
    const socketPath = path.join(dir, `${name}.sock`);
    const info = await nbd.startExport({ backend: device, listen: { socketPath } });
    expect(info.readOnly).toBe(true);
    const file = path.join(dir, `${name}.img`);
    await runOk("nbdcopy", [exportUri({ kind: "unix", socketPath }, ""), file]);
    const data = await fs.readFile(file);
    await fs.rm(file);
    expect(data.length).toBe(size);
    return data;
  } finally {
    await nbd.shutdown();
    device.close();
  }
}

const missing = missingCommands(["nbdcopy"]);
if (missing.length > 0)
  console.warn(`skipping the NBD read-back of snapshot metadata: missing ${missing.join(", ")}`);

describe("CSI SnapshotMetadata over a unix socket", () => {
  it("advertises SNAPSHOT_METADATA_SERVICE", async () => {
    const res = await callCsi<{ capabilities: Array<{ service?: { type: string } | null }> }>(
      clients.identity,
      "GetPluginCapabilities",
      {},
    );
    expect(res.capabilities.map((c) => c.service?.type)).toContain("SNAPSHOT_METADATA_SERVICE");
  });

  it.skipIf(missing.length > 0)(
    "a random write history: the delta covers every byte that differs, allocated every non-zero byte, read through NBD",
    async () => {
      const rng = new Prng(4242);
      const { volume } = await createVolume(clients.controller, {
        name: "pvc-cbt",
        capacityRange: { requiredBytes: 24 * MiB + 12 * KiB },
        volumeCapabilities: [BLOCK],
      });
      const size = volume.capacityBytes;
      const dev = engine.openVolumeDevice(parseResourceId(volume.volumeId)!.engineName);
      const snapshots: string[] = [];
      const touched: Set<number>[] = []; // chunks written between snapshot i-1 and i
      try {
        for (let s = 0; s < 4; s++) {
          const chunks = new Set<number>();
          const writes = 4 + rng.int(20);
          for (let w = 0; w < writes; w++) {
            // Mostly small writes (partial chunks), some large; a few zero runs over data.
            const length = rng.next() < 0.7 ? 512 * (1 + rng.int(16)) : 4 * KiB * (1 + rng.int(200));
            const offset = Math.min(size - length, rng.int(size / 512) * 512);
            if (rng.next() < 0.15) await dev.writeZeroes(offset, length);
            else await dev.write(offset, Prng.fill(Buffer.alloc(length), rng.nextU32()));
            for (let c = Math.floor(offset / CHUNK); c * CHUNK < offset + length; c++) chunks.add(c);
          }
          touched.push(chunks);
          const { snapshot } = await createSnapshot(clients.controller, `snap-cbt-${s}`, volume.volumeId);
          snapshots.push(snapshot.snapshotId);
        }
      } finally {
        dev.close();
      }
      const contents = await Promise.all(snapshots.map((id) => readThroughNbd(id, size)));

      for (let j = 0; j < snapshots.length; j++) {
        const target = contents[j]!;
        const allocated = await stream("GetMetadataAllocated", {
          snapshotId: snapshots[j],
          startingOffset: 0,
          maxResults: 1 + rng.int(8),
        });
        checkMessages(allocated, size);
        const map = coverage(ranges(allocated), size);
        expect(
          firstUncovered(map, (b) => target[b] !== 0),
          `a non-zero byte of snapshot ${j}`,
        ).toBe(-1);

        for (let i = 0; i < j; i++) {
          const base = contents[i]!;
          const maxResults = rng.int(6); // 0: the plugin chooses
          const delta = await stream("GetMetadataDelta", {
            baseSnapshotId: snapshots[i],
            targetSnapshotId: snapshots[j],
            startingOffset: 0,
            maxResults,
          });
          checkMessages(delta, size, maxResults);
          const reported = coverage(ranges(delta), size);
          expect(
            firstUncovered(reported, (b) => base[b] !== target[b]),
            `delta ${i}..${j}`,
          ).toBe(-1);
          // Over-reporting: only within chunks written between the two snapshots.
          const between = new Set<number>();
          for (let e = i + 1; e <= j; e++) for (const c of touched[e]!) between.add(c);
          const outside = ranges(delta).filter((r) => ![...chunkSpan(r)].every((c) => between.has(c)));
          expect(outside, `delta ${i}..${j} reports unwritten chunks`).toEqual([]);
          const reportedBytes = ranges(delta).reduce((n, r) => n + r.sizeBytes, 0);
          expect(reportedBytes).toBeLessThanOrEqual(between.size * CHUNK);

          // Resuming where an interrupted stream stopped gives the rest of the same answer.
          const all = ranges(delta);
          if (all.length >= 2) {
            const cut = all[Math.floor(all.length / 2)]!;
            const from = cut.byteOffset + Math.floor(cut.sizeBytes / 2);
            const resumed = ranges(
              await stream("GetMetadataDelta", {
                baseSnapshotId: snapshots[i],
                targetSnapshotId: snapshots[j],
                startingOffset: from,
                maxResults: 3,
              }),
            );
            // CSI spec: the first tuple must end after starting_offset.
            expect(resumed[0]!.byteOffset + resumed[0]!.sizeBytes).toBeGreaterThan(from);
            expect(merged(resumed)).toEqual(
              merged(
                all
                  .filter((r) => r.byteOffset + r.sizeBytes > from)
                  .map((r) =>
                    r.byteOffset >= from
                      ? r
                      : { byteOffset: from, sizeBytes: r.byteOffset + r.sizeBytes - from },
                  ),
              ),
            );
          }
        }
      }
    },
  );

  it("answers the spec's codes: missing ids, unknown ids, other volumes, offsets past the end", async () => {
    const mk = async (name: string) =>
      (
        await createVolume(clients.controller, {
          name,
          capacityRange: { requiredBytes: 4 * MiB },
          volumeCapabilities: [BLOCK],
        })
      ).volume.volumeId;
    const a = await mk("pvc-codes-a");
    const b = await mk("pvc-codes-b");
    const a1 = (await createSnapshot(clients.controller, "codes-a1", a)).snapshot.snapshotId;
    const a2 = (await createSnapshot(clients.controller, "codes-a2", a)).snapshot.snapshotId;
    const b1 = (await createSnapshot(clients.controller, "codes-b1", b)).snapshot.snapshotId;
    const delta = (o: object) =>
      codeOf("GetMetadataDelta", { baseSnapshotId: a1, targetSnapshotId: a2, ...o });
    const allocated = (o: object) => codeOf("GetMetadataAllocated", { snapshotId: a1, ...o });
    expect(await allocated({ snapshotId: "" })).toBe("INVALID_ARGUMENT");
    expect(await allocated({ snapshotId: "local/no-such-snapshot" })).toBe("NOT_FOUND");
    expect(await allocated({ snapshotId: "not an id" })).toBe("NOT_FOUND");
    expect(await allocated({ startingOffset: 4 * MiB + 1 })).toBe("OUT_OF_RANGE");
    expect(await allocated({ startingOffset: -1 })).toBe("OUT_OF_RANGE");
    expect(await allocated({ maxResults: -5 })).toBe("INVALID_ARGUMENT");
    expect(await delta({ baseSnapshotId: "" })).toBe("INVALID_ARGUMENT");
    expect(await delta({ targetSnapshotId: "" })).toBe("INVALID_ARGUMENT");
    // Required fields before existence: a missing target with an unknown base is INVALID_ARGUMENT.
    expect(await delta({ baseSnapshotId: "local/gone", targetSnapshotId: "" })).toBe("INVALID_ARGUMENT");
    expect(await delta({ baseSnapshotId: "local/gone" })).toBe("NOT_FOUND");
    expect(await delta({ targetSnapshotId: "other-node/gone" })).toBe("NOT_FOUND");
    expect(await delta({ targetSnapshotId: b1 })).toBe("INVALID_ARGUMENT");
    expect(await delta({ startingOffset: 4 * MiB + 1 })).toBe("OUT_OF_RANGE");
    // At the very end: nothing left, one message with the capacity (a finished resume).
    const atEnd = await stream("GetMetadataAllocated", { snapshotId: a1, startingOffset: 4 * MiB });
    expect(atEnd).toEqual([
      { blockMetadataType: "VARIABLE_LENGTH", volumeCapacityBytes: 4 * MiB, blockMetadata: [] },
    ]);
  });

  it("pages by max_results (the plugin's choice at 0), each message within it", async () => {
    const { volume } = await createVolume(clients.controller, {
      name: "pvc-pages",
      capacityRange: { requiredBytes: 64 * MiB },
      volumeCapabilities: [BLOCK],
    });
    const dev = engine.openVolumeDevice(parseResourceId(volume.volumeId)!.engineName);
    const RANGES = DEFAULT_MAX_RESULTS + 300;
    try {
      // Every other 4 KiB block: ranges that cannot merge (partial chunks are reported by block).
      for (let c = 0; c < RANGES; c++) await dev.write(c * 8 * KiB, Buffer.alloc(4 * KiB, 1 + (c % 250)));
    } finally {
      dev.close();
    }
    const snap = (await createSnapshot(clients.controller, "pages-1", volume.volumeId)).snapshot.snapshotId;
    const chosen = await stream("GetMetadataAllocated", {
      snapshotId: snap,
      startingOffset: 0,
      maxResults: 0,
    });
    expect(chosen.map((m) => m.blockMetadata.length)).toEqual([DEFAULT_MAX_RESULTS, 300]);
    const small = await stream("GetMetadataAllocated", {
      snapshotId: snap,
      startingOffset: 0,
      maxResults: 500,
    });
    expect(small.map((m) => m.blockMetadata.length)).toEqual([500, 500, 324]);
    expect(ranges(small)).toEqual(ranges(chosen));
    expect(ranges(small)[RANGES - 1]).toEqual({ byteOffset: (RANGES - 1) * 8 * KiB, sizeBytes: 4 * KiB });
  });
});

describe("the operator CLI: snapshot diff and snapshot allocated", () => {
  it("prints the ranges with totals, or JSON, from the SnapshotMetadata service", async () => {
    const { volume } = await createVolume(clients.controller, {
      name: "pvc-cli",
      capacityRange: { requiredBytes: 4 * MiB },
      volumeCapabilities: [BLOCK],
    });
    const dev = engine.openVolumeDevice(parseResourceId(volume.volumeId)!.engineName);
    let s1: string;
    let s2: string;
    try {
      await dev.write(0, Buffer.alloc(CHUNK, 7));
      s1 = (await createSnapshot(clients.controller, "cli-1", volume.volumeId)).snapshot.snapshotId;
      await dev.write(3 * CHUNK + 8 * KiB, Buffer.alloc(4 * KiB, 8));
      s2 = (await createSnapshot(clients.controller, "cli-2", volume.volumeId)).snapshot.snapshotId;
    } finally {
      dev.close();
    }
    const diff = await cli(["snapshot", "diff", s1, s2]);
    expect(diff.code).toBe(0);
    expect(diff.stdout.split("\n")).toEqual([
      "OFFSET  LENGTH  SIZE",
      `${3 * CHUNK + 8 * KiB}  4096    4 KiB`,
      "1 range, 4 KiB changed of 4 MiB (0.1%)",
      "",
    ]);
    const json = await cli(["snapshot", "allocated", s2, "--json"]);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual({
      snapshotId: s2,
      volumeCapacityBytes: 4 * MiB,
      rangeCount: 2,
      totalBytes: CHUNK + 4 * KiB,
      ranges: [
        { offset: 0, length: CHUNK },
        { offset: 3 * CHUNK + 8 * KiB, length: 4 * KiB },
      ],
    });
    const bad = await cli(["snapshot", "diff", s1, "local/no-such-snapshot"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/GetMetadataDelta failed \(NOT_FOUND\)/);
    expect((await cli(["snapshot", "diff", s1])).code).toBe(2);
  });
});

/**
 * The real CLI against this test's socket. Asynchronous: the server runs in this process, and a
 * synchronous spawn would stop it from answering.
 */
async function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "cmd/snapblock.ts", ...args, "--endpoint", `unix://${server.socketPath}`],
    { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
  );
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  return { code, stdout, stderr };
}

/** The spec's rules for a stream: one type and capacity throughout, ranges ascending, disjoint. */
function checkMessages(messages: MetadataResponse[], size: number, maxResults = 0): void {
  expect(messages.length).toBeGreaterThan(0);
  let end = 0;
  for (const m of messages) {
    expect(m.blockMetadataType).toBe("VARIABLE_LENGTH");
    expect(m.volumeCapacityBytes).toBe(size);
    if (maxResults > 0) expect(m.blockMetadata.length).toBeLessThanOrEqual(maxResults);
    for (const r of m.blockMetadata) {
      expect(r.sizeBytes).toBeGreaterThan(0);
      expect(r.byteOffset).toBeGreaterThanOrEqual(end);
      end = r.byteOffset + r.sizeBytes;
    }
  }
  expect(end).toBeLessThanOrEqual(size);
}

function coverage(list: Range[], size: number): Uint8Array {
  const map = new Uint8Array(size);
  for (const r of list) map.fill(1, r.byteOffset, r.byteOffset + r.sizeBytes);
  return map;
}

function firstUncovered(map: Uint8Array, wanted: (byte: number) => boolean): number {
  for (let b = 0; b < map.length; b++) if (map[b] === 0 && wanted(b)) return b;
  return -1;
}

function* chunkSpan(r: Range): Generator<number> {
  for (let c = Math.floor(r.byteOffset / CHUNK); c * CHUNK < r.byteOffset + r.sizeBytes; c++) yield c;
}

function merged(list: Range[]): Range[] {
  const out: Range[] = [];
  for (const r of list) {
    const last = out[out.length - 1];
    if (last && last.byteOffset + last.sizeBytes === r.byteOffset) last.sizeBytes += r.sizeBytes;
    else out.push({ ...r });
  }
  return out;
}
