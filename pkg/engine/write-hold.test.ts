import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ChunkFetcher, FetchedChunk } from "./pending-fill.js";
import { Pool } from "./pool.js";

const KiB = 1024;
const MiB = 1024 * KiB;

let dir: string;
const pools: Pool[] = [];
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), "snapblock-hold-"));
});
afterEach(async () => {
  for (const p of pools.splice(0)) await p.close().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

async function newPool(name: string, o: { sizeBytes: number; chunkSize: number }) {
  const pool = await Pool.create({ dir: path.join(dir, name), autoCommitMs: 0, ...o });
  pools.push(pool);
  return pool;
}

/** A fetcher that answers only when told to (a source node that is slow to answer). */
class HeldFetcher implements ChunkFetcher {
  private go!: () => void;
  private readonly ready = new Promise<void>((resolve) => (this.go = resolve));
  answer(): void {
    this.go();
  }
  async *fetch(chunks: number[]): AsyncIterable<FetchedChunk> {
    await this.ready;
    for (const chunk of chunks) yield { chunk, data: Buffer.alloc(64 * KiB, 0x5a) };
  }
}

describe("group snapshots: several volumes at one instant", () => {
  it("100 group snapshots under a writer alternating numbered writes: members differ by at most one write in the order written", async () => {
    const pool = await newPool("p", { sizeBytes: 64 * MiB, chunkSize: 64 * KiB });
    const names = ["v0", "v1", "v2"];
    for (const n of names) await pool.createVolume(n, 4 * MiB);
    const devs = names.map((n) => pool.openVolume(n));
    const SLOTS = 64;
    let next = 0;
    let stop = false;
    const writer = (async () => {
      while (!stop) {
        const n = next++;
        const block = Buffer.alloc(4096, 0xee);
        block.writeBigUInt64LE(BigInt(n + 1), 0); // 0 means "never written"
        // Slots rotate through several chunks: redirects, partial chunks and in-place writes mix.
        await devs[n % 3]!.write((Math.floor(n / 3) % SLOTS) * 12 * KiB, block);
        // Storage I/O may be synchronous (node-storage.ts): a write can finish within microtasks,
        // and a loop of them would starve the timers the snapshotting side sleeps on. Real
        // writers arrive from sockets, between turns of the event loop.
        await new Promise((r) => setImmediate(r));
      }
    })();
    const groups: string[][] = [];
    for (let g = 0; g < 100; g++) {
      await new Promise((r) => setTimeout(r, g % 7));
      const pairs = names.map((v) => ({ volume: v, snapshot: `g${g}-${v}` }));
      const taken = await pool.createSnapshots(pairs);
      expect(taken.map((s) => s.name)).toEqual(pairs.map((p) => p.snapshot));
      groups.push(pairs.map((p) => p.snapshot));
    }
    stop = true;
    await writer;
    for (const d of devs) d.close();
    expect(next).toBeGreaterThan(300);
    let nonTrivial = 0;
    for (const members of groups) {
      const last: number[] = [];
      for (const m of members) {
        const h = pool.openSnapshot(m);
        let max = 0;
        for (let s = 0; s < SLOTS; s++)
          max = Math.max(max, Number((await h.read(s * 12 * KiB, 8)).readBigUInt64LE(0)));
        h.close();
        last.push(max - 1); // -1: nothing written yet
      }
      // The newest write in the group, M: every volume holds exactly the last write it got up to
      // M, and nothing after it.
      const newest = Math.max(...last);
      last.forEach((seen, v) => {
        let expected = newest;
        while (expected >= 0 && expected % 3 !== v) expected--;
        expect(seen, `group ${members.join(",")}: volume v${v}`).toBe(expected);
      });
      if (newest >= 2) nonTrivial++;
    }
    expect(nonTrivial).toBeGreaterThan(90);
  });

  it("a hold that cannot drain in time gives up, leaves nothing behind and every volume open", async () => {
    const pool = await newPool("p", { sizeBytes: 16 * MiB, chunkSize: 64 * KiB });
    await pool.createVolume("free", 1 * MiB);
    await pool.createFromSource({
      kind: "volume",
      name: "filling",
      sizeBytes: 1 * MiB,
      source: "node-x/snap",
      ranges: [[0, 1]],
    });
    const fetcher = new HeldFetcher();
    pool.setChunkFetcher("node-x/snap", fetcher);
    const filling = pool.openVolume("filling");
    // A partial write of a pending chunk waits for its content from the (silent) source.
    const stuck = filling.write(4096, Buffer.alloc(4096, 1));
    await new Promise((r) => setTimeout(r, 20));
    // The hold waits for that write; bounded, it gives up: CANCELLED, and no snapshot.
    const hold = pool.holdWrites(["free", "filling"], { timeoutMs: 100 });
    await expect(hold).rejects.toMatchObject({ code: "CANCELLED" });
    await expect(
      pool
        .holdWrites(["filling"], { timeoutMs: 50 })
        .then((h) => h.snapshot([{ volume: "filling", snapshot: "x" }])),
    ).rejects.toMatchObject({ code: "CANCELLED" });
    expect(pool.listSnapshots()).toEqual([]);
    // The volume that could be held is open again at once.
    const free = pool.openVolume("free");
    await free.write(0, Buffer.alloc(4096, 2));
    free.close();
    fetcher.answer();
    await stuck;
    await filling.write(8192, Buffer.alloc(4096, 3)); // and the other once its write finished
    filling.close();
  });
});
