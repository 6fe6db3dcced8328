import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Pool } from "../engine/index.js";
import { isSnapblockError } from "../errors/index.js";
import { importLegacyMetadata } from "./legacy-metadata-file.js";
import { LocalEngine } from "./local-engine.js";
import { MetadataStore, NOTE_TABLES } from "./metadata-store.js";

const dirs: string[] = [];
const tempDir = (): string => {
  const dir = mkdtempSync(path.join(tmpdir(), "snapblock-meta-"));
  dirs.push(dir);
  return dir;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const MiB = 1 << 20;

describe("CSI metadata in the pool's journal", () => {
  it("persists with its device, changes in one commit each, and goes with a delete", async () => {
    const dir = path.join(tempDir(), "pool");
    let pool = await Pool.create({ dir, sizeBytes: 8 * MiB, autoCommitMs: 0 });
    await pool.createVolume("pvc-1", MiB, { annotations: { "csi.name": "pvc-1" } });
    await pool.createSnapshot("pvc-1", "s-1", { annotations: { "csi.name": "s 1" } });
    let store = new MetadataStore(pool);
    await store.set("volume", "pvc-1", { "csi.name": "pvc-1", fsType: "xfs" });
    await store.set("group", "g-1", { members: "s-1" });
    await store.addTombstones([{ origin: "b/old", id: 3, deletedAtMs: Date.now() }], new Date(), 60_000);
    await expect(store.set("volume", "nothing", {})).rejects.toSatisfy((e: unknown) =>
      isSnapblockError(e, "NOT_FOUND"),
    );
    // The durable metadata (checkpoint + journal, reloaded) equals memory.
    expect((await pool.check()).problems).toEqual([]);
    await pool.close();
    // Back from the checkpoint written at close.
    pool = await Pool.open({ dir });
    store = new MetadataStore(pool);
    expect(store.get("volume", "pvc-1")).toEqual({ "csi.name": "pvc-1", fsType: "xfs" });
    expect(store.get("snapshot", "s-1")).toEqual({ "csi.name": "s 1" });
    expect(store.get("group", "g-1")).toEqual({ members: "s-1" });
    expect(store.tombstones().map((t) => [t.origin, t.id])).toEqual([["b/old", 3]]);
    await pool.deleteSnapshot("s-1");
    expect(store.has("snapshot", "s-1")).toBe(false);
    expect(store.get("snapshot", "s-1")).toEqual({});
    // A new snapshot of the same name starts without the old one's metadata.
    await pool.createSnapshot("pvc-1", "s-1");
    expect(store.get("snapshot", "s-1")).toEqual({});
    await store.deleteGroup("g-1");
    await store.addTombstones([], new Date(Date.now() + 120_000), 60_000);
    expect(store.has("group", "g-1")).toBe(false);
    expect(store.tombstones()).toEqual([]);
    expect((await pool.check()).problems).toEqual([]);
    await pool.close();
  });

  it("replays annotations from the journal after a crash (no checkpoint at close)", async () => {
    const dir = path.join(tempDir(), "pool");
    const pool = await Pool.create({ dir, sizeBytes: 8 * MiB, autoCommitMs: 0 });
    await pool.createVolume("v", MiB, { annotations: { a: "1" } });
    await pool.createSnapshot("v", "s", { annotations: { b: "2" } });
    await pool.annotate("volume", "v", { a: "3" });
    // A copy of the directory as it is now: what a power loss after these commits leaves.
    const crashed = path.join(tempDir(), "pool");
    execFileSync("cp", ["-r", dir, crashed]);
    rmSync(path.join(crashed, "lock"), { force: true });
    await pool.close();
    const again = await Pool.open({ dir: crashed });
    expect(again.recovery.replayedBatches).toBeGreaterThan(0);
    expect(again.annotations("volume", "v")).toEqual({ a: "3" });
    expect(again.annotations("snapshot", "s")).toEqual({ b: "2" });
    await again.close();
  });
});

/**
 * pool-before-journal-metadata.tar.gz: a pool and its csi-metadata.json written by the release
 * before this change (checkpoint version 3): LocalEngine with 4 KiB chunks, volumes pvc-1 (8 KiB
 * of 'a' written), pvc-2 (metadata updated after creation), snapshot snap-1 of pvc-1 (a pull
 * grant added), pvc-3 restored from snap-1, group record group-1, a tombstone for node-b/old-snap,
 * closed, then reopened and snapshot snap-2 of pvc-2 taken and the process ended without a close
 * (so snap-2 is only in the journal). An entry for a volume that was never created (pvc-crashed:
 * what a crash between the file and the pool left) was added to the file by hand.
 */
function unpackOldPool(): { root: string; poolDir: string; file: string } {
  const root = tempDir();
  execFileSync(
    "tar",
    ["-xzf", path.join(import.meta.dirname, "testdata", "pool-before-journal-metadata.tar.gz")],
    {
      cwd: root,
    },
  );
  return { root, poolDir: path.join(root, "pool"), file: path.join(root, "csi-metadata.json") };
}

describe("a pool written before the metadata moved into the journal", () => {
  it("opens with every name and record intact, and the file is imported once", async () => {
    const { poolDir, file } = unpackOldPool();
    const open = async (): Promise<LocalEngine> => {
      const engine = new LocalEngine({
        nodeId: "node-a",
        poolDir,
        metadataFile: file,
        points: { tickMs: 0 },
      });
      await engine.open();
      return engine;
    };
    const check = async (engine: LocalEngine): Promise<void> => {
      const volumes = (await engine.listVolumes()).items.map((v) => [v.name, v.meta]);
      expect(volumes).toEqual([
        ["pvc-1", { "csi.name": "pvc-1", fsType: "ext4" }],
        [
          "pvc-2",
          { "csi.name": "pvc-ü 2", access: '{"mode":"SINGLE_NODE_WRITER"}', "node.rawBlock": "true" },
        ],
        ["pvc-3", { "csi.name": "pvc-3", "csi.source": "snap-1" }],
      ]);
      const snapshots = (await engine.listSnapshots()).items.map((s) => [s.name, s.meta]);
      expect(snapshots).toEqual([
        ["snap-1", { "csi.name": "snapshot-1", "snapblock.dev/pull-grants": "node-b" }],
        // Made after the file's last change and journaled only: its entry was in the file.
        ["snap-2", { "csi.name": "snapshot-2" }],
      ]);
      expect(engine.allowsPull("snap-1", "node-b")).toBe(true);
      expect(await engine.getGroupRecord("group-1")).toEqual({ members: "snap-1", "csi.name": "vgs-1" });
      expect(await engine.listTombstones()).toEqual([
        { origin: "node-b/old-snap", id: 4, deletedAtMs: 1796105103455 },
      ]);
      const dev = engine.openSnapshotDevice("snap-1");
      const buf = await dev.read(0, 8192);
      dev.close();
      expect(buf.equals(Buffer.alloc(8192, 0x61))).toBe(true);
    };
    const first = await open();
    await check(first);
    expect(existsSync(file)).toBe(false);
    expect(JSON.parse(readFileSync(`${file}.imported`, "utf8"))).toHaveProperty("version", 1);
    await first.close();
    const second = await open();
    await check(second);
    await second.close();
  });

  it("is not imported twice when the rename of the file was lost after the import's commit", async () => {
    const { poolDir, file } = unpackOldPool();
    const original = readFileSync(file);
    const pool = await Pool.open({ dir: poolDir });
    const imported = await importLegacyMetadata(pool, file);
    expect(imported).toMatchObject({
      found: true,
      volumes: 3,
      snapshots: 2,
      groups: 1,
      tombstones: 1,
      dropped: 1,
    });
    // Later changes, then the file back as if its rename had not reached the disk.
    await pool.annotate("volume", "pvc-1", { "csi.name": "pvc-1", fsType: "xfs" });
    writeFileSync(file, original);
    const again = await importLegacyMetadata(pool, file);
    expect(again).toMatchObject({ found: true, volumes: 0, snapshots: 0 });
    expect(pool.annotations("volume", "pvc-1")).toEqual({ "csi.name": "pvc-1", fsType: "xfs" });
    expect(existsSync(file)).toBe(false);
    expect([...pool.notes(NOTE_TABLES.imports).keys()]).toEqual(["csi-metadata.json"]);
    await pool.close();
  });

  it("refuses a corrupt file and changes nothing", async () => {
    const { poolDir, file } = unpackOldPool();
    writeFileSync(file, "{not json");
    const pool = await Pool.open({ dir: poolDir });
    await expect(importLegacyMetadata(pool, file)).rejects.toSatisfy((e: unknown) =>
      isSnapblockError(e, "CORRUPT"),
    );
    writeFileSync(file, JSON.stringify({ version: 99, volumes: {}, snapshots: {} }));
    await expect(importLegacyMetadata(pool, file)).rejects.toSatisfy((e: unknown) =>
      isSnapblockError(e, "CORRUPT"),
    );
    expect(pool.annotations("volume", "pvc-1")).toEqual({});
    expect(existsSync(file)).toBe(true);
    await pool.close();
  });
});
