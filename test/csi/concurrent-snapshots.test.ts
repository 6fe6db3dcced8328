import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CsiServer,
  NodeService,
  callCsi,
  connectCsi,
  controllerHandlers,
  identityHandlers,
  unavailableNodeVolumeManager,
  type CsiClients,
} from "../../pkg/csi/index.js";
import { BLOCK, MiB, createVolume, type SnapshotOut } from "./csi-fixtures.js";
import { removeDataDir } from "./local-process.js";
import { silentLogger } from "../../pkg/log/index.js";
import { LocalEngine, type VolumeDevice } from "../../pkg/engine-api/index.js";

/**
 * 50 parallel CreateSnapshot calls on one volume while a writer keeps writing to it. The CSI
 * server runs in this process on a real unix socket (the writer needs the volume's blocks, which
 * the binary only exposes through the node data path); the calls go over gRPC as the
 * csi-snapshotter's would. Every snapshot must be a consistent cut of the write sequence: it
 * holds every write acknowledged before its call began, and for some point K of the sequence
 * exactly the writes up to K.
 */
const BLOCK_SIZE = 4096;
const BLOCKS = 64;

let dir: string;
let engine: LocalEngine;
let server: CsiServer;
let clients: CsiClients;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "snapblock-csi-conc-"));
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
      ready: () => engine.isReady(),
      logger,
    }),
    ...controllerHandlers({ engine, logger }),
    node: new NodeService({ engine, volumes: unavailableNodeVolumeManager("test"), logger }).handlers(),
  });
  clients = connectCsi(server.socketPath);
});

afterAll(async () => {
  clients.close();
  await server.shutdown();
  await engine.close();
  removeDataDir(dir);
});

/** Block b of write number i holds i (as a 32-bit counter) everywhere; 0 = never written. */
function pattern(i: number): Buffer {
  const buf = Buffer.alloc(BLOCK_SIZE);
  for (let o = 0; o < BLOCK_SIZE; o += 4) buf.writeUInt32LE(i, o);
  return buf;
}

describe("CreateSnapshot under write load", () => {
  it("50 parallel snapshots of one volume are all created and all consistent", async () => {
    const volume = (
      await createVolume(clients.controller, {
        name: "pvc-busy",
        volumeCapabilities: [BLOCK],
        capacityRange: { requiredBytes: 4 * MiB },
      })
    ).volume;
    const device: VolumeDevice = engine.openVolumeDevice("pvc-busy");
    // Write i goes to block (i * 7) % BLOCKS; writes are issued one after another. The writer
    // yields to the event loop between writes, as a socket-driven NBD client does (an in-place
    // engine write can complete without any I/O callback, and a tight loop would starve gRPC).
    let acked = 0;
    let issued = 0;
    let writing = true;
    const writer = (async () => {
      while (writing) {
        const i = ++issued;
        await device.write(((i * 7) % BLOCKS) * BLOCK_SIZE, pattern(i));
        acked = i;
        await new Promise((r) => setImmediate(r));
      }
    })();
    await new Promise((r) => setTimeout(r, 20));

    const bounds = new Map<string, { ackedAtStart: number }>();
    // All 50 calls are in flight together, each started once the writer has written again since
    // the previous one started: a snapshot is one quick commit now, and calls arriving at one
    // instant would all be taken at one cut, which would leave the cuts between writes untested.
    const calls: Promise<{ snapshot: SnapshotOut }>[] = [];
    for (let n = 0; n < 50; n++) {
      const name = `snap-busy-${n}`;
      const before = acked;
      for (let waited = 0; acked === before && waited < 200; waited++) {
        await new Promise((r) => setImmediate(r));
      }
      bounds.set(name, { ackedAtStart: acked });
      calls.push(
        callCsi<{ snapshot: SnapshotOut }>(clients.controller, "CreateSnapshot", {
          name,
          sourceVolumeId: volume.volumeId,
        }),
      );
    }
    const results = await Promise.all(calls);
    const issuedAtEnd = issued;
    writing = false;
    await writer;
    device.close();

    expect(new Set(results.map((r) => r.snapshot.snapshotId)).size).toBe(50);
    for (const r of results)
      expect(r.snapshot).toMatchObject({
        sourceVolumeId: volume.volumeId,
        readyToUse: true,
        sizeBytes: volume.capacityBytes,
      });
    const listed = await callCsi<{ entries: unknown[] }>(clients.controller, "ListSnapshots", {
      sourceVolumeId: volume.volumeId,
    });
    expect(listed.entries).toHaveLength(50);

    const cuts = new Set<number>();
    for (let n = 0; n < 50; n++) {
      const name = `snap-busy-${n}`;
      const snap = engine.openSnapshotDevice(name);
      const data = await snap.read(0, BLOCKS * BLOCK_SIZE);
      snap.close();
      const seen = [...Array(BLOCKS).keys()].map((b) => {
        const block = data.subarray(b * BLOCK_SIZE, (b + 1) * BLOCK_SIZE);
        const value = block.readUInt32LE(0);
        expect(
          block.equals(value === 0 ? Buffer.alloc(BLOCK_SIZE) : pattern(value)),
          `${name} block ${b} is torn`,
        ).toBe(true);
        return value;
      });
      // The cut: the newest write the snapshot holds. Every block must then hold the newest
      // write to it at or before the cut (nothing older, nothing newer).
      const cut = Math.max(...seen);
      cuts.add(cut);
      for (let b = 0; b < BLOCKS; b++) {
        let expected = 0;
        for (let i = cut; i >= 1; i--) {
          if ((i * 7) % BLOCKS === b) {
            expected = i;
            break;
          }
        }
        expect(seen[b], `${name} block ${b} at cut ${cut}`).toBe(expected);
      }
      expect(cut).toBeGreaterThanOrEqual(bounds.get(name)!.ackedAtStart);
      expect(cut).toBeLessThanOrEqual(issuedAtEnd);
    }

    // The writer really ran between the snapshots: they caught different points of the sequence.
    expect(cuts.size).toBeGreaterThan(1);

    // A repeated call returns the existing snapshot (idempotent by name and source).
    const again = await callCsi<{ snapshot: SnapshotOut }>(clients.controller, "CreateSnapshot", {
      name: "snap-busy-7",
      sourceVolumeId: volume.volumeId,
    });
    expect(again.snapshot).toEqual(results[7]!.snapshot);
  });
});
