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
