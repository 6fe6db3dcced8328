import { crc32 } from "node:zlib";
import { SnapblockError } from "../errors/index.js";
import { FANOUT, type TreeNode } from "./chunk-tree.js";
import type { Device, Metadata } from "./metadata.js";
import { PendingChunks } from "./pending-chunks.js";
import { mapSize, readMap, writeMap, type StringMap } from "./string-maps.js";
import type { DeviceKind } from "./types.js";

/**
 * The checkpoint: the whole metadata state at one sequence number, written to `checkpoint.tmp`,
 * synced, and renamed over `checkpoint` (then the directory is synced). Shared table nodes are
 * written once and referenced by number, so the file is as small as the in-memory state.
 *
 * Header (64 bytes, little-endian): magic "SBCKPT01", version u32, pool uuid (16), sequence u64,
 * next device id u32, device count u32, node count u32, payload length u32, payload crc32 u32,
 * header crc32 u32 (over bytes 0..59). Payload: nodes in post-order (children before parents,
 * numbered from 1), then devices. See docs/engine-format.md for each field.
 */
const MAGIC = "SBCKPT01";
/**
 * 2 added the pending-chunks section, 3 the protection-policy section, 4 the annotation and note
 * sections, 5 the pinned bit of a device's flags; older files (without them) still load.
 */
const VERSION = 5;
export const CHECKPOINT_HEADER = 64;

const TAG_LEAF_SPARSE = 1;
const TAG_LEAF_DENSE = 2;
const TAG_INNER = 3;

const KIND_CODE: Record<DeviceKind, number> = { volume: 1, snapshot: 2 };
/** Device flags: a full background copy is unfinished; a recovery point is pinned (version 5). */
const FLAG_COPYING = 1;
const FLAG_PINNED = 2;

class Writer {
  buf = Buffer.alloc(1 << 16);
  off = 0;
  ensure(n: number): void {
    if (this.off + n <= this.buf.length) return;
    let len = this.buf.length * 2;
    while (len < this.off + n) len *= 2;
    const next = Buffer.alloc(len);
    this.buf.copy(next, 0, 0, this.off);
    this.buf = next;
  }
  u8(v: number): void {
    this.ensure(1);
    this.buf[this.off++] = v;
  }
  u16(v: number): void {
    this.ensure(2);
    this.off = this.buf.writeUInt16LE(v, this.off);
  }
  u32(v: number): void {
    this.ensure(4);
    this.off = this.buf.writeUInt32LE(v, this.off);
  }
  u64(v: number): void {
    this.ensure(8);
    this.off = this.buf.writeBigUInt64LE(BigInt(v), this.off);
  }
  map(m: StringMap): void {
    const n = mapSize(m);
    this.ensure(n);
    this.off = writeMap(this.buf, this.off, m);
  }
  str(s: string): void {
    const len = Buffer.byteLength(s, "utf8");
    this.u16(len);
    this.ensure(len);
    this.off += this.buf.write(s, this.off, "utf8");
  }
}

/** Serializes the state synchronously (no other change can interleave). */
export function encodeCheckpoint(meta: Metadata, uuid: Buffer): Buffer {
  const w = new Writer();
  w.off = CHECKPOINT_HEADER;
  const ids = new Map<TreeNode, number>();
  const emit = (node: TreeNode): number => {
    const known = ids.get(node);
    if (known !== undefined) return known;
    if (node.isLeaf) {
      let count = 0;
      for (const v of node.slots) if (v !== 0) count++;
      if (count * 6 < FANOUT * 4) {
        w.u8(TAG_LEAF_SPARSE);
        w.u16(count);
        node.slots.forEach((v, i) => {
          if (v !== 0) {
            w.u16(i);
            w.u32(v);
          }
        });
      } else {
        w.u8(TAG_LEAF_DENSE);
        for (const v of node.slots) w.u32(v);
      }
    } else {
      const childIds: [number, number][] = [];
      node.children.forEach((c, i) => {
        if (c) childIds.push([i, emit(c)]);
      });
      w.u8(TAG_INNER);
      w.u16(childIds.length);
      for (const [i, id] of childIds) {
        w.u16(i);
        w.u32(id);
      }
    }
    const id = ids.size + 1;
    ids.set(node, id);
    return id;
  };
  const roots = new Map<number, number>();
  for (const d of meta.devices.values()) roots.set(d.id, d.table.root ? emit(d.table.root) : 0);
  const nodeCount = ids.size;
  for (const d of meta.devices.values()) {
    w.u32(d.id);
    w.u8(KIND_CODE[d.kind]);
    w.u8((d.copying ? FLAG_COPYING : 0) | (d.pinned ? FLAG_PINNED : 0));
    w.u8(d.table.levels);
    w.u32(roots.get(d.id) ?? 0);
    w.u64(d.sizeBytes);
    w.u64(d.createdAtMs);
    w.u32(d.sourceId);
    w.u8(d.sourceKind ? KIND_CODE[d.sourceKind] : 0);
    w.u32(d.lineage);
    w.str(d.name);
    w.str(d.sourceName ?? "");
  }
  // Partial chunks: chunk u32, backing u32 (0xffffffff: none), bitmap length u16, bitmap.
  w.u32(meta.space.partials.size);
  for (const [chunk, p] of meta.space.partials) {
    w.u32(chunk);
    w.u32(p.backing < 0 ? 0xffffffff : p.backing);
    w.u16(p.valid.length);
    for (const b of p.valid) w.u8(b);
  }
  // Pending chunks (version 2): device id u32, source str, total u32, run count u32, runs
  // (first u32, count u32).
  const pending = [...meta.devices.values()].filter((d) => d.pending);
  w.u32(pending.length);
  for (const d of pending) {
    const p = d.pending!;
    w.u32(d.id);
    w.str(p.source);
    w.u32(p.total);
    const runs = p.ranges();
    w.u32(runs.length);
    for (const [first, count] of runs) {
      w.u32(first);
      w.u32(count);
    }
  }
  // Protection policies (version 3): device id u32, policy str.
  const protectedVolumes = [...meta.devices.values()].filter((d) => d.protection !== undefined);
  w.u32(protectedVolumes.length);
  for (const d of protectedVolumes) {
    w.u32(d.id);
    w.str(d.protection!);
  }
  // Annotations (version 4): device id u32, string map.
  const annotated = [...meta.devices.values()].filter((d) => d.annotations !== undefined);
  w.u32(annotated.length);
  for (const d of annotated) {
    w.u32(d.id);
    w.map(d.annotations!);
  }
  // Notes (version 4): table u32, name str, string map.
  let noteCount = 0;
  for (const entries of meta.notes.values()) noteCount += entries.size;
  w.u32(noteCount);
  for (const [table, entries] of meta.notes) {
    for (const [name, map] of entries) {
      w.u32(table);
      w.str(name);
      w.map(map);
    }
  }
  const buf = w.buf.subarray(0, w.off);
  buf.write(MAGIC, 0, "latin1");
  buf.writeUInt32LE(VERSION, 8);
  uuid.copy(buf, 12);
  buf.writeBigUInt64LE(BigInt(meta.seq), 28);
  buf.writeUInt32LE(meta.nextId, 36);
  buf.writeUInt32LE(meta.devices.size, 40);
  buf.writeUInt32LE(nodeCount, 44);
  buf.writeUInt32LE(buf.length - CHECKPOINT_HEADER, 48);
  buf.writeUInt32LE(crc32(buf.subarray(CHECKPOINT_HEADER)), 52);
  buf.writeUInt32LE(0, 56);
  buf.writeUInt32LE(crc32(buf.subarray(0, 60)), 60);
  return buf;
}

/** Loads a checkpoint into an empty Metadata, rebuilding reference counts from the references. */
export function decodeCheckpoint(buf: Buffer, uuid: Buffer, meta: Metadata): void {
  const fail = (why: string): never => {
    throw new SnapblockError("CORRUPT", `checkpoint: ${why}`);
  };
  if (buf.length < CHECKPOINT_HEADER || buf.toString("latin1", 0, 8) !== MAGIC) fail("bad magic");
  if (buf.readUInt32LE(60) !== crc32(buf.subarray(0, 60))) fail("header checksum mismatch");
  const version = buf.readUInt32LE(8);
  if (version < 1 || version > VERSION) fail(`version ${version} not supported`);
  if (!buf.subarray(12, 28).equals(uuid)) fail("belongs to another pool (uuid mismatch)");
  const payloadLen = buf.readUInt32LE(48);
  if (buf.length !== CHECKPOINT_HEADER + payloadLen) fail("length mismatch");
  if (buf.readUInt32LE(52) !== crc32(buf.subarray(CHECKPOINT_HEADER))) fail("payload checksum mismatch");
  const seq = Number(buf.readBigUInt64LE(28));
  const nextId = buf.readUInt32LE(36);
  const deviceCount = buf.readUInt32LE(40);
  const nodeCount = buf.readUInt32LE(44);

  let off = CHECKPOINT_HEADER;
  const need = (n: number): void => {
    if (off + n > buf.length) fail("truncated payload");
  };
  const u8 = (): number => (need(1), buf[off++]!);
  const u16 = (): number => (need(2), (off += 2), buf.readUInt16LE(off - 2));
  const u32 = (): number => (need(4), (off += 4), buf.readUInt32LE(off - 4));
  const u64 = (): number => (need(8), (off += 8), Number(buf.readBigUInt64LE(off - 8)));
  const str = (): string => {
    const len = u16();
    need(len);
    off += len;
    return buf.toString("utf8", off - len, off);
  };

  const nodes: TreeNode[] = [];
  const node = (id: number): TreeNode => {
    const n = nodes[id - 1];
    if (!n) return fail(`reference to node ${id} before its definition`);
    return n;
  };
  for (let i = 0; i < nodeCount; i++) {
    const tag = u8();
    let n: TreeNode;
    if (tag === TAG_LEAF_SPARSE || tag === TAG_LEAF_DENSE) {
      const leaf = meta.tables.newLeaf();
      if (tag === TAG_LEAF_DENSE) {
        for (let s = 0; s < FANOUT; s++) leaf.slots[s] = u32();
      } else {
        const count = u16();
        for (let k = 0; k < count; k++) {
          const s = u16();
          if (s >= FANOUT) fail("leaf slot out of range");
          leaf.slots[s] = u32();
        }
      }
      for (const v of leaf.slots) if (v !== 0) meta.space.addRef(v - 1);
      n = leaf;
    } else if (tag === TAG_INNER) {
      const inner = meta.tables.newInner();
      const count = u16();
      for (let k = 0; k < count; k++) {
        const s = u16();
        if (s >= FANOUT) fail("inner slot out of range");
        const child = node(u32());
        child.rc++;
        inner.children[s] = child;
      }
      n = inner;
    } else {
      return fail(`unknown node tag ${tag}`);
    }
    n.rc = 0;
    nodes.push(n);
  }
  const kinds: (DeviceKind | undefined)[] = [undefined, "volume", "snapshot"];
  for (let i = 0; i < deviceCount; i++) {
    const id = u32();
    const kind = kinds[u8()] ?? fail("bad device kind");
    const flags = u8();
    if (flags & ~(version >= 5 ? FLAG_COPYING | FLAG_PINNED : FLAG_COPYING))
      fail(`device ${id} has flags ${flags}`);
    const levels = u8();
    const rootId = u32();
    const root = rootId ? node(rootId) : null;
    if (root) root.rc++;
    const d: Device = {
      id,
      kind,
      copying: (flags & FLAG_COPYING) !== 0,
      ...((flags & FLAG_PINNED) !== 0 ? { pinned: true } : {}),
      table: { root, levels },
      sizeBytes: u64(),
      createdAtMs: u64(),
      sourceId: u32(),
      sourceKind: kinds[u8()],
      lineage: u32(),
      name: str(),
      sourceName: undefined,
    };
    const sourceName = str();
    d.sourceName = d.sourceKind ? sourceName : undefined;
    if (d.pinned && kind !== "snapshot") fail(`volume ${id} is pinned`);
    meta.addDevice(d);
  }
  const partialCount = u32();
  for (let i = 0; i < partialCount; i++) {
    const chunk = u32();
    const raw = u32();
    const len = u16();
    need(len);
    const valid = new Uint8Array(buf.subarray(off, off + len));
    off += len;
    if (meta.space.refCount(chunk) === 0) fail(`partial chunk ${chunk} is not mapped`);
    const backing = raw === 0xffffffff ? -1 : raw;
    meta.space.loadPartial(chunk, backing, valid);
  }
  const pendingCount = version >= 2 ? u32() : 0;
  for (let i = 0; i < pendingCount; i++) {
    const d = meta.devices.get(u32()) ?? fail("pending chunks of a device that does not exist");
    const pending = PendingChunks.empty(str(), meta.chunksFor(d.sizeBytes));
    pending.total = u32();
    const runs = u32();
    for (let r = 0; r < runs; r++) {
      const first = u32();
      const count = u32();
      if (first + count > meta.chunksFor(d.sizeBytes)) fail(`pending chunk past the end of device ${d.id}`);
      pending.add(first, count);
    }
    if (pending.count > 0) meta.setPending(d, pending);
  }
  const protectedCount = version >= 3 ? u32() : 0;
  for (let i = 0; i < protectedCount; i++) {
    const d = meta.devices.get(u32()) ?? fail("protection policy of a device that does not exist");
    if (d.kind !== "volume") fail(`protection policy on snapshot ${d.id}`);
    d.protection = str();
  }
  const annotatedCount = version >= 4 ? u32() : 0;
  for (let i = 0; i < annotatedCount; i++) {
    const d = meta.devices.get(u32()) ?? fail("annotations of a device that does not exist");
    const { map, next } = readMap(buf, off, buf.length);
    off = next;
    d.annotations = map;
  }
  const noteCount = version >= 4 ? u32() : 0;
  for (let i = 0; i < noteCount; i++) {
    const table = u32();
    const name = str();
    const { map, next } = readMap(buf, off, buf.length);
    off = next;
    if (table < 1) fail(`note table ${table}`);
    meta.setNote(table, name, map);
  }
  if (off !== buf.length) fail("trailing bytes after the last section");
  for (const n of nodes) {
    // Nodes start with rc=1 from their constructor; it was reset to 0 and recounted above.
    if (n.rc === 0) fail("a table node is referenced by nothing");
  }
  meta.seq = seq;
  meta.nextId = Math.max(meta.nextId, nextId);
  meta.space.rebuildFreeList();
}
