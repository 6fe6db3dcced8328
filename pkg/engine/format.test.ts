import { crc32 } from "node:zlib";
import { describe, expect, it } from "vitest";
import { decodeCheckpoint, encodeCheckpoint } from "./checkpoint.js";
import { ChunkSpace } from "./chunk-space.js";
import { ChunkTables } from "./chunk-tree.js";
import { FaultStorage } from "./fault-storage.js";
import { JOURNAL_HEADER_SIZE, encodeBatch, encodeJournalHeader, scanJournal } from "./journal.js";
import { Metadata } from "./metadata.js";
import { RecordType, decodeRecord, encodeRecord, encodedSize, type MetaRecord } from "./records.js";
import { decodeSuperblock, encodeSuperblock, newSuperblock } from "./superblock.js";

const uuid = Buffer.alloc(16, 0xab);

const samples: MetaRecord[] = [
  {
    type: RecordType.Create,
    id: 7,
    kind: 1,
    sourceId: 0,
    sizeBytes: 2 ** 40,
    createdAtMs: 1700000000123,
    name: "pvc-ünï",
  },
  { type: RecordType.Create, id: 8, kind: 2, sourceId: 7, sizeBytes: 512, createdAtMs: 1, name: "s" },
  { type: RecordType.Delete, id: 9 },
  { type: RecordType.Map, id: 7, chunk: 0xfffffffe, phys: 12 },
  { type: RecordType.Unmap, id: 7, first: 3, count: 100000 },
  { type: RecordType.Resize, id: 7, sizeBytes: 2 ** 50 },
  { type: RecordType.CopyState, id: 7, copying: true },
  { type: RecordType.MapPartial, id: 7, chunk: 1, phys: 2, backing: -1, valid: Uint8Array.of(3, 0) },
  { type: RecordType.MapPartial, id: 7, chunk: 1, phys: 2, backing: 5, valid: Uint8Array.of(0x80) },
  { type: RecordType.PartialValid, id: 2, valid: Uint8Array.of(1, 2, 3) },
  { type: RecordType.PartialDone, id: 2 },
  { type: RecordType.Protect, id: 7, policy: "1s for 10m, 1m for 1h" },
  { type: RecordType.Protect, id: 7, policy: "" },
  { type: RecordType.Annotate, id: 7, map: { "csi.name": "pvc-ü", empty: "", big: "x".repeat(70000) } },
  { type: RecordType.Annotate, id: 7, map: {} },
  { type: RecordType.Note, id: 1, name: "group-1", map: { members: "a,b" } },
  { type: RecordType.Note, id: 2, name: "node-a/snap", map: undefined },
  { type: RecordType.Pin, id: 8, pinned: true },
  { type: RecordType.Pin, id: 8, pinned: false },
];

function newMeta(capacity = 1000, chunkSize = 65536): Metadata {
  const space = new ChunkSpace(capacity);
  return new Metadata(space, new ChunkTables(space), chunkSize);
}

describe("records", () => {
  it("round-trip every record type byte for byte", () => {
    for (const r of samples) {
      const buf = Buffer.alloc(encodedSize(r));
      expect(encodeRecord(r, buf, 0)).toBe(buf.length);
      const { record, next } = decodeRecord(buf, 0);
      expect(next).toBe(buf.length);
      expect(record).toEqual(r);
    }
  });

  it("refuse truncated or unknown records", () => {
    const buf = Buffer.alloc(encodedSize(samples[0]!));
    encodeRecord(samples[0]!, buf, 0);
    expect(() => decodeRecord(buf.subarray(0, buf.length - 1), 0)).toThrow(/runs past/);
    buf[0] = 99;
    expect(() => decodeRecord(buf, 0)).toThrow(/unknown journal record type 99/);
    const note = samples.find((r) => r.type === RecordType.Annotate)!;
    const nbuf = Buffer.alloc(encodedSize(note));
    encodeRecord(note, nbuf, 0);
    expect(() => decodeRecord(nbuf.subarray(0, nbuf.length - 1), 0)).toThrow(/runs past/);
  });

  it("keep a key named __proto__ as data", () => {
    const map = JSON.parse('{"__proto__": "x", "a": "b"}') as Record<string, string>;
    const r: MetaRecord = { type: RecordType.Annotate, id: 1, map };
    const buf = Buffer.alloc(encodedSize(r));
    encodeRecord(r, buf, 0);
    const back = decodeRecord(buf, 0).record as { map: Record<string, string> };
    expect(Object.keys(back.map)).toEqual(["__proto__", "a"]);
    expect(Object.getPrototypeOf(back.map)).toBe(Object.prototype);
  });
});

describe("journal", () => {
  it("replays whole batches and stops at a torn one", async () => {
    const fs = new FaultStorage();
    const f = await fs.open("journal", { create: true });
    const b1 = encodeBatch(1, samples.slice(0, 3));
    const b2 = encodeBatch(4, samples.slice(3, 6));
    const b3 = encodeBatch(7, samples.slice(6));
    await f.write([encodeJournalHeader(uuid, 0), b1, b2, b3.subarray(0, b3.length - 1)], 0);
    const scan = await scanJournal(f, uuid);
    expect(scan.batches.map((b) => b.firstSeq)).toEqual([1, 4]);
    expect(scan.batches[1]!.records).toEqual(samples.slice(3, 6));
    expect(scan.validEnd).toBe(JOURNAL_HEADER_SIZE + b1.length + b2.length);
    expect(scan.tornBytes).toBe(b3.length - 1);
    // A flipped bit in the middle batch ends the replay there.
    b2[30] = b2[30]! ^ 1;
    await f.write([b2], JOURNAL_HEADER_SIZE + b1.length);
    expect((await scanJournal(f, uuid)).batches).toHaveLength(1);
    await expect(scanJournal(f, Buffer.alloc(16))).rejects.toThrow(/another pool/);
  });
});

describe("superblock and checkpoint", () => {
  it("superblock round-trips and detects damage", () => {
    const sb = newSuperblock(65536, 1234);
    const buf = encodeSuperblock(sb);
    expect(decodeSuperblock(buf, "x")).toEqual(sb);
    buf[13] = buf[13]! ^ 1;
    expect(() => decodeSuperblock(buf, "x")).toThrow(/checksum/);
  });

  it("writes a shared node once and restores sharing and counts", () => {
    const meta = newMeta();
    const create = (id: number, sourceId: number, kind: 1 | 2): void =>
      meta.apply(
        { type: RecordType.Create, id, kind, sourceId, sizeBytes: 1 << 30, createdAtMs: 5, name: `d${id}` },
        meta.seq + 1,
        true,
      );
    create(1, 0, 1);
    for (let c = 0; c < 600; c++)
      meta.apply({ type: RecordType.Map, id: 1, chunk: c, phys: c }, meta.seq + 1, true);
    for (let s = 2; s < 12; s++) create(s, 1, 2);
    meta.apply({ type: RecordType.Map, id: 1, chunk: 5, phys: 700 }, meta.seq + 1, true);
    meta.apply(
      { type: RecordType.MapPartial, id: 1, chunk: 6, phys: 701, backing: 6, valid: Uint8Array.of(1, 0) },
      meta.seq + 1,
      true,
    );
    const image = encodeCheckpoint(meta, uuid);
    // Ten snapshots share one table: the image holds it once, not eleven times.
    expect(image.length).toBeLessThan(2 * (600 * 6 + 2 * 4 * 512));
    const back = newMeta();
    decodeCheckpoint(image, uuid, back);
    expect(back.seq).toBe(meta.seq);
    expect(back.devices.size).toBe(11);
    const snap = back.snapshots.get("d2")!;
    expect(back.tables.physical(snap.table, 5)).toBe(5);
    expect(back.tables.physical(back.volumes.get("d1")!.table, 5)).toBe(700);
    expect(back.space.refCount(6)).toBe(2); // the snapshots' shared leaf + the partial's backing
    expect(back.space.partials.get(701)).toEqual({ backing: 6, valid: Uint8Array.of(1, 0) });
    expect(back.snapshots.get("d3")!.table.root).toBe(snap.table.root);
    image[image.length - 1] = image[image.length - 1]! ^ 1;
    expect(() => decodeCheckpoint(image, uuid, newMeta())).toThrow(/checksum/);
  });
});

describe("annotations and notes", () => {
  it("apply, survive a checkpoint and go with their device", () => {
    const meta = newMeta();
    const apply = (r: MetaRecord): void => meta.apply(r, meta.seq + 1, true);
    apply({
      type: RecordType.Create,
      id: 1,
      kind: 1,
      sourceId: 0,
      sizeBytes: 1 << 20,
      createdAtMs: 5,
      name: "v",
    });
    apply({
      type: RecordType.Create,
      id: 2,
      kind: 2,
      sourceId: 1,
      sizeBytes: 1 << 20,
      createdAtMs: 6,
      name: "s",
    });
    apply({ type: RecordType.Annotate, id: 1, map: { "csi.name": "pvc-1" } });
    apply({ type: RecordType.Annotate, id: 2, map: { "csi.name": "snap 1", fs: "ext4" } });
    apply({ type: RecordType.Note, id: 1, name: "g", map: { a: "1" } });
    apply({ type: RecordType.Note, id: 2, name: "n/x", map: { id: "3", at: "4" } });
    apply({ type: RecordType.Note, id: 2, name: "n/y", map: { id: "5", at: "6" } });
    apply({ type: RecordType.Note, id: 2, name: "n/y", map: undefined });
    const back = newMeta();
    decodeCheckpoint(encodeCheckpoint(meta, uuid), uuid, back);
    expect(back.volumes.get("v")!.annotations).toEqual({ "csi.name": "pvc-1" });
    expect(back.snapshots.get("s")!.annotations).toEqual({ "csi.name": "snap 1", fs: "ext4" });
    expect([...back.notes].map(([t, e]) => [t, [...e]])).toEqual([
      [1, [["g", { a: "1" }]]],
      [2, [["n/x", { id: "3", at: "4" }]]],
    ]);
    apply({ type: RecordType.Annotate, id: 1, map: {} });
    expect(meta.volumes.get("v")!.annotations).toBeUndefined();
    apply({ type: RecordType.Delete, id: 2 });
    const again = newMeta();
    decodeCheckpoint(encodeCheckpoint(meta, uuid), uuid, again);
    expect(again.devices.size).toBe(1);
    expect(again.volumes.get("v")!.annotations).toBeUndefined();
    expect(() => apply({ type: RecordType.Annotate, id: 2, map: { a: "b" } })).toThrow(/does not exist/);
  });

  it("loads a version 3 checkpoint (written before them)", () => {
    const meta = newMeta();
    meta.apply(
      { type: RecordType.Create, id: 1, kind: 1, sourceId: 0, sizeBytes: 1 << 20, createdAtMs: 5, name: "v" },
      1,
      true,
    );
    const v4 = encodeCheckpoint(meta, uuid);
    // Version 3 is version 4 without the two trailing sections (two zero counts here).
    const v3 = Buffer.from(v4.subarray(0, v4.length - 8));
    v3.writeUInt32LE(3, 8);
    v3.writeUInt32LE(v3.length - 64, 48);
    v3.writeUInt32LE(crc32(v3.subarray(64)), 52);
    v3.writeUInt32LE(crc32(v3.subarray(0, 60)), 60);
    const back = newMeta();
    decodeCheckpoint(v3, uuid, back);
    expect(back.volumes.get("v")!.annotations).toBeUndefined();
    expect(back.notes.size).toBe(0);
  });
});

describe("pinned recovery points", () => {
  const create = (meta: Metadata): void => {
    meta.apply(
      { type: RecordType.Create, id: 1, kind: 1, sourceId: 0, sizeBytes: 1 << 20, createdAtMs: 5, name: "v" },
      meta.seq + 1,
      true,
    );
    meta.apply(
      {
        type: RecordType.Create,
        id: 2,
        kind: 2,
        sourceId: 1,
        sizeBytes: 1 << 20,
        createdAtMs: 6,
        name: "rp--1-6",
      },
      meta.seq + 1,
      true,
    );
  };

  it("apply to snapshots only and survive a checkpoint as a device flag", () => {
    const meta = newMeta();
    create(meta);
    meta.apply({ type: RecordType.Pin, id: 2, pinned: true }, meta.seq + 1, true);
    meta.apply({ type: RecordType.CopyState, id: 1, copying: true }, meta.seq + 1, true);
    expect(() => meta.apply({ type: RecordType.Pin, id: 1, pinned: true }, meta.seq + 1, true)).toThrow(
      /pin of volume 1/,
    );
    const image = encodeCheckpoint(meta, uuid);
    expect(image.readUInt32LE(8)).toBe(5);
    const back = newMeta();
    decodeCheckpoint(image, uuid, back);
    expect(back.snapshots.get("rp--1-6")!.pinned).toBe(true);
    expect(back.snapshots.get("rp--1-6")!.copying).toBe(false);
    expect(back.volumes.get("v")!.copying).toBe(true);
    expect(back.volumes.get("v")!.pinned).toBeUndefined();
    meta.apply({ type: RecordType.Pin, id: 2, pinned: false }, meta.seq + 1, true);
    const again = newMeta();
    decodeCheckpoint(encodeCheckpoint(meta, uuid), uuid, again);
    expect(again.snapshots.get("rp--1-6")!.pinned).toBeUndefined();
  });

  it("load from a version 4 checkpoint (no pins), which cannot carry the pinned bit", () => {
    const meta = newMeta();
    create(meta);
    meta.apply({ type: RecordType.Pin, id: 2, pinned: true }, meta.seq + 1, true);
    const v5 = encodeCheckpoint(meta, uuid);
    const asVersion = (image: Buffer, version: number): Buffer => {
      const out = Buffer.from(image);
      out.writeUInt32LE(version, 8);
      out.writeUInt32LE(crc32(out.subarray(64)), 52);
      out.writeUInt32LE(crc32(out.subarray(0, 60)), 60);
      return out;
    };
    // Version 4 has the same layout; its writers never set the pinned bit.
    expect(() => decodeCheckpoint(asVersion(v5, 4), uuid, newMeta())).toThrow(/device 2 has flags 2/);
    meta.apply({ type: RecordType.Pin, id: 2, pinned: false }, meta.seq + 1, true);
    const back = newMeta();
    decodeCheckpoint(asVersion(encodeCheckpoint(meta, uuid), 4), uuid, back);
    expect(back.snapshots.get("rp--1-6")!.pinned).toBeUndefined();
  });
});

describe("chunk tables", () => {
  it("diffs by skipping shared subtrees and counts references lazily", () => {
    const space = new ChunkSpace(1 << 20);
    const tables = new ChunkTables(space);
    const a = tables.newTable(1 << 20);
    let seq = 0;
    const map = (t: typeof a, c: number): void => {
      const [p] = space.reserve(1);
      space.commitReserved(p!);
      tables.set(t, c, p!, ++seq);
    };
    for (let c = 0; c < 5000; c += 7) map(a, c);
    const b = tables.share(a);
    expect(a.root!.rc).toBe(2);
    const changed: number[] = [];
    tables.diff(a, b, (c) => changed.push(c));
    expect(changed).toEqual([]);
    map(b, 14);
    map(b, 100000);
    tables.unmapRange(b, 4000, 10, ++seq);
    tables.diff(a, b, (c) => changed.push(c));
    expect(changed).toEqual([14, 4004, 100000]);
    // Only the changed paths were copied: chunk 0 sits in the leaf that was shadowed (for 14),
    // so two leaves reference it now; chunk 2002's leaf is still shared, referenced once.
    expect(space.refCount(tables.physical(a, 0))).toBe(2);
    expect(space.refCount(tables.physical(a, 2002))).toBe(1);
    expect(space.refCount(tables.physical(a, 14))).toBe(1);
    expect(tables.lookup(b, 21, seq).inPlace).toBe(false); // shared leaf
    tables.drop(a, ++seq);
    expect(tables.lookup(b, 21, seq).inPlace).toBe(true);
  });
});
