import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isSnapblockError } from "../errors/index.js";
import type { ChunkFetcher, FetchedChunk } from "./pending-fill.js";
import { Pool } from "./pool.js";
import { Prng } from "./prng.js";

const CS = 64 * 1024;
const SIZE = 64 * CS; // 4 MiB, 64 chunks

/** Runs of a chunk list (what a node sends for a snapshot's allocated chunks). */
function runs(chunks: number[]): [number, number][] {
  const out: [number, number][] = [];
  for (const c of chunks) {
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === c) last[1]++;
    else out.push([c, 1]);
  }
  return out;
}

/** A fetcher reading another pool's snapshot, as the engine service would over the network. */
class PoolFetcher implements ChunkFetcher {
  fetched: number[] = [];
  failAfter = Infinity;
  delayMs = 0;
  constructor(
    private readonly pool: Pool,
    private readonly snapshot: string,
  ) {}
  async *fetch(chunks: number[]): AsyncIterable<FetchedChunk> {
    const dev = this.pool.openSnapshot(this.snapshot);
    try {
      for (const chunk of chunks) {
        if (this.fetched.length >= this.failAfter) throw new Error("source node went away");
        if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
        const [extent] = dev.extents(chunk * CS, CS);
        this.fetched.push(chunk);
        yield { chunk, data: extent?.allocated ? await dev.read(chunk * CS, CS) : null };
      }
    } finally {
      dev.close();
    }
  }
}

async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000 && !check(); i++) await new Promise((r) => setTimeout(r, 5));
  if (!check()) throw new Error(`timed out waiting for ${what}`);
}

describe("content from elsewhere: pending chunks, fetched on demand and pulled in the background", () => {
  let dir: string;
  let x: Pool;
  let y: Pool;
  let expected: Buffer;

  beforeEach(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "snapblock-pending-"));
    x = await Pool.create({ dir: path.join(dir, "x"), sizeBytes: 256 * CS, autoCommitMs: 0 });
    y = await Pool.create({ dir: path.join(dir, "y"), sizeBytes: 256 * CS, autoCommitMs: 0 });
    // On x: a volume with data in scattered chunks (some partial), holes elsewhere, snapshotted.
    await x.createVolume("vol", SIZE);
    const dev = x.openVolume("vol");
    const rng = new Prng(7);
    expected = Buffer.alloc(SIZE);
    for (const chunk of [0, 1, 2, 5, 17, 18, 40, 63]) {
      const len = chunk === 5 ? 4096 : CS; // chunk 5 holds one block
      const data = Buffer.from(Array.from({ length: len }, () => rng.next() & 0xff));
      await dev.write(chunk * CS, data);
      data.copy(expected, chunk * CS);
    }
    await dev.flush();
    dev.close();
    await x.createSnapshot("vol", "snap");
  });

  afterEach(async () => {
    await y.close().catch(() => undefined);
    await x.close().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  const allocated = (): [number, number][] => runs(x.allocatedChunks("snapshot", "snap").chunks);
  /** A volume or snapshot on y whose content is x's snapshot "snap", all of it pending. */
  const fromSnap = (kind: "volume" | "snapshot", name: string) =>
    y.createFromSource({ kind, name, sizeBytes: SIZE, source: "x/snap", ranges: allocated() });

  it("a restored volume is readable at once; unfetched chunks never read as zeroes; the pull completes it", async () => {
    const info = await fromSnap("volume", "copy");
    expect(info.kind === "volume" && info.pending).toEqual({ source: "x/snap", chunks: 8, totalChunks: 8 });
    const copy = y.openVolume("copy");
    // Holes read as zeroes without any source; a chunk that is not here yet is an I/O error.
    expect((await copy.read(10 * CS, CS)).equals(Buffer.alloc(CS))).toBe(true);
    const noRoute = await copy.read(0, 4096).catch((e: unknown) => e);
    expect(isSnapblockError(noRoute, "IO")).toBe(true);
    // Clients that skip holes must not skip pending chunks.
    expect(copy.extents(0, 3 * CS)).toEqual([{ offset: 0, length: 3 * CS, allocated: true }]);
    expect(y.pendingSources()).toEqual([
      { source: "x/snap", devices: [{ kind: "volume", name: "copy" }], hasFetcher: false },
    ]);

    const fetcher = new PoolFetcher(x, "snap");
    fetcher.delayMs = 3; // slow enough that reads race the pull
    y.setChunkFetcher("x/snap", fetcher);
    // Reads during the pull: exactly the snapshot.
    expect((await copy.read(17 * CS, 2 * CS)).equals(expected.subarray(17 * CS, 19 * CS))).toBe(true);
    expect((await copy.read(5 * CS, CS)).equals(expected.subarray(5 * CS, 6 * CS))).toBe(true);
    await until(
      () => y.pullProgress("x/snap") === undefined || y.pullProgress("x/snap")?.state === "done",
      "the pull",
    );
    expect(y.getVolume("copy").pending).toBeUndefined();
    expect((await copy.read(0, SIZE)).equals(expected)).toBe(true);
    // Only allocated chunks travelled, each once.
    expect([...fetcher.fetched].sort((a, b) => a - b)).toEqual([0, 1, 2, 5, 17, 18, 40, 63]);
    copy.close();
    expect((await y.check()).problems).toEqual([]);
  });

  it("a pull is reported complete only once its last chunk's arrival is committed", async () => {
    await fromSnap("volume", "copy");
    const copy = y.openVolume("copy");
    // Chunks written whole stop being pending (no fetch); the pool commits only when asked.
    for (const chunk of [0, 1, 2, 5, 17, 18, 40, 63]) await copy.write(chunk * CS, Buffer.alloc(CS, 9));
    // Nothing pending any more, but not durable: a crash now would bring the chunks back.
    expect(y.getVolume("copy").pending).toEqual({ source: "x/snap", chunks: 0, totalChunks: 8 });
    await copy.flush();
    expect(y.getVolume("copy").pending).toBeUndefined();
    copy.close();
    // A snapshot filled the same way (a replica) says the same.
    await fromSnap("snapshot", "rep");
    expect(y.getSnapshot("rep").pending).toMatchObject({ chunks: 8 });
    y.setChunkFetcher("x/snap", new PoolFetcher(x, "snap"));
    await until(() => y.getSnapshot("rep").pending === undefined, "the replica's pull, committed");
    expect((await y.check()).problems).toEqual([]);
  });

  it("keeps writes made during the pull, whole or partial, and snapshots taken during it", async () => {
    await fromSnap("volume", "copy");
    const copy = y.openVolume("copy");
    const mine = Buffer.from(expected);
    // A whole pending chunk: the write replaces it and needs nothing from the source (there is
    // no route to it yet).
    const whole = Buffer.alloc(CS, 0xa5);
    await copy.write(63 * CS, whole);
    whole.copy(mine, 63 * CS);
    const fetcher = new PoolFetcher(x, "snap");
    fetcher.delayMs = 20;
    y.setChunkFetcher("x/snap", fetcher);
    // Part of a pending chunk: the rest of that chunk keeps the snapshot's content.
    const small = Buffer.alloc(100, 0x5a);
    await copy.write(40 * CS + 1000, small);
    small.copy(mine, 40 * CS + 1000);
    // A snapshot now holds what the volume holds now, including chunks still to arrive.
    await y.createSnapshot("copy", "mid");
    const later = Buffer.alloc(CS, 0x33);
    await copy.write(18 * CS, later);
    await until(
      () => y.getVolume("copy").pending === undefined && y.getSnapshot("mid").pending === undefined,
      "both filled",
    );
    const mid = y.openSnapshot("mid");
    expect((await mid.read(0, SIZE)).equals(mine)).toBe(true);
    mid.close();
    later.copy(mine, 18 * CS);
    expect((await copy.read(0, SIZE)).equals(mine)).toBe(true);
    copy.close();
    expect(fetcher.fetched.filter((c) => c === 63)).toEqual([]);
    expect((await y.check()).problems).toEqual([]);
  });

  it("survives a restart mid-pull: the filled chunks are kept, the rest is pulled after reopening", async () => {
    await fromSnap("volume", "copy");
    const first = new PoolFetcher(x, "snap");
    first.failAfter = 3;
    y.setChunkFetcher("x/snap", first);
    await until(() => y.pullProgress("x/snap")?.state === "stalled", "the source to fail");
    expect(y.getVolume("copy").pending?.chunks).toBe(5);
    await y.close();

    y = await Pool.open({ dir: path.join(dir, "y"), autoCommitMs: 0 });
    expect(y.getVolume("copy").pending).toEqual({ source: "x/snap", chunks: 5, totalChunks: 8 });
    expect(y.pendingSources()[0]?.hasFetcher).toBe(false);
    // Another holder of the same snapshot takes over.
    const second = new PoolFetcher(x, "snap");
    y.setChunkFetcher("x/snap", second);
    await until(() => y.getVolume("copy").pending === undefined, "the pull after reopening");
    expect(second.fetched).toHaveLength(5);
    const copy = y.openVolume("copy");
    expect((await copy.read(0, SIZE)).equals(expected)).toBe(true);
    copy.close();
    expect((await y.check()).problems).toEqual([]);
  });

  it("an incremental copy starts from an earlier one and fetches only the changed chunks, holes included", async () => {
    await fromSnap("snapshot", "r1");
    y.setChunkFetcher("x/snap", new PoolFetcher(x, "snap"));
    await until(() => y.getSnapshot("r1").pending === undefined, "the first copy");
    // On x: one chunk rewritten, one trimmed, one new; a second snapshot.
    const dev = x.openVolume("vol");
    const changed = Buffer.alloc(CS, 0x77);
    await dev.write(2 * CS, changed);
    await dev.writeZeroes(40 * CS, CS);
    await dev.write(30 * CS, changed);
    await dev.flush();
    dev.close();
    await x.createSnapshot("vol", "snap2");
    const delta = x.changedChunks("snap", "snap2").chunks;
    expect(delta).toEqual([2, 30, 40]);
    await y.createFromSource({
      kind: "snapshot",
      name: "r2",
      sizeBytes: SIZE,
      source: "x/snap2",
      ranges: runs(delta),
      base: { kind: "snapshot", name: "r1" },
    });
    const fetcher = new PoolFetcher(x, "snap2");
    y.setChunkFetcher("x/snap2", fetcher);
    await until(() => y.getSnapshot("r2").pending === undefined, "the incremental copy");
    expect(fetcher.fetched.sort((a, b) => a - b)).toEqual([2, 30, 40]);
    const want = Buffer.from(expected);
    changed.copy(want, 2 * CS);
    changed.copy(want, 30 * CS);
    want.fill(0, 40 * CS, 41 * CS);
    const r2 = y.openSnapshot("r2");
    expect((await r2.read(0, SIZE)).equals(want)).toBe(true);
    // The trimmed chunk is a hole again, not a chunk of zeroes.
    expect(r2.extents(40 * CS, CS)).toEqual([{ offset: 40 * CS, length: CS, allocated: false }]);
    r2.close();
    const r1 = y.openSnapshot("r1");
    expect((await r1.read(0, SIZE)).equals(expected)).toBe(true);
    r1.close();
    expect((await y.check()).problems).toEqual([]);
  });

  it("refuses bad ranges and a base that is itself still filling", async () => {
    await expect(
      y.createFromSource({ kind: "volume", name: "bad", sizeBytes: SIZE, source: "s", ranges: [[60, 10]] }),
    ).rejects.toThrow(/outside 64 chunks/);
    await fromSnap("snapshot", "r1");
    await expect(
      y.createFromSource({
        kind: "snapshot",
        name: "r2",
        sizeBytes: SIZE,
        source: "x/snap2",
        ranges: [[0, 1]],
        base: { kind: "snapshot", name: "r1" },
      }),
    ).rejects.toThrow(/still filling/);
    // Deleting a device that waits for content drops its pull.
    await y.deleteSnapshot("r1");
    expect(y.pendingSources()).toEqual([]);
    expect((await y.check()).problems).toEqual([]);
  });
});
