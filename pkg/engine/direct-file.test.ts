import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { NodeStorage } from "./node-storage.js";
import { Prng } from "./prng.js";

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function twins(): Promise<{ dir: string; storage: NodeStorage; plain: NodeStorage }> {
  const dir = await mkdtemp(join(tmpdir(), "snapblock-direct-"));
  dirs.push(dir);
  return {
    dir,
    storage: await NodeStorage.create(join(dir, "direct"), { dataIo: "direct" }),
    plain: await NodeStorage.create(join(dir, "plain"), { dataIo: "buffered" }),
  };
}

describe("direct data I/O", () => {
  it("reads back every byte a buffered file holds after the same random, unaligned writes", async () => {
    const { storage, plain } = await twins();
    const direct = await storage.open("data", { create: true, bulk: true });
    const buffered = await plain.open("data", { create: true, bulk: true });
    const g = new Prng(7);
    const span = 1 << 20;
    try {
      for (let i = 0; i < 400; i++) {
        const aligned = g.chance(0.5);
        const position = aligned ? g.int(span / 4096) * 4096 : g.int(span);
        const length = aligned ? (1 + g.int(16)) * 4096 : 1 + g.int(20000);
        // Several buffers, as the engine passes them (a coalesced run of pieces).
        const parts = g.chance(0.3) ? [length >> 1, length - (length >> 1)] : [length];
        const bufs = parts.map((n, k) => Prng.fill(Buffer.alloc(n), i * 10 + k));
        await direct.write(bufs, position);
        await buffered.write(bufs, position);
        if (i % 50 === 49) {
          const at = g.int(span);
          const n = 1 + g.int(70000);
          const a = Buffer.alloc(n, 1);
          const b = Buffer.alloc(n, 2);
          const got = await direct.read(a, 0, n, at);
          expect(got).toBe(await buffered.read(b, 0, n, at));
          expect(a.subarray(0, got).equals(b.subarray(0, got))).toBe(true);
        }
      }
      const size = await buffered.size();
      // Direct writes are whole blocks: the file ends at the end of the last block written.
      expect(await direct.size()).toBe(Math.ceil(size / 4096) * 4096);
      const a = Buffer.alloc(size);
      const b = Buffer.alloc(size);
      expect(await direct.read(a, 0, size, 0)).toBe(size);
      await buffered.read(b, 0, size, 0);
      expect(a.equals(b)).toBe(true);
    } finally {
      await direct.close();
      await buffered.close();
    }
  });

  it("reads short at the end of the file, into the caller's buffer at its offset", async () => {
    const { storage } = await twins();
    const f = await storage.open("data", { create: true, bulk: true });
    try {
      // Unaligned, past the end: zeroes before it; the file ends at the block's end (12288), as
      // direct writes are whole blocks, and the rest of that block reads as zeroes.
      await f.write([Buffer.from("hello")], 10_000);
      expect(await f.size()).toBe(12_288);
      const out = Buffer.alloc(64, 0xee);
      expect(await f.read(out, 3, 40, 9_990)).toBe(40);
      expect(out.subarray(3, 13).equals(Buffer.alloc(10))).toBe(true);
      expect(out.subarray(13, 18).toString()).toBe("hello");
      expect(out.subarray(18, 43).equals(Buffer.alloc(25))).toBe(true);
      expect(out[2]).toBe(0xee);
      expect(out[43]).toBe(0xee);
      expect(await f.read(out, 0, 40, 12_270)).toBe(18);
      expect(await f.read(out, 0, 10, 20_000)).toBe(0);
    } finally {
      await f.close();
    }
  });

  it("leaves no probe file behind and keeps metadata files buffered", async () => {
    const { dir, storage } = await twins();
    const f = await storage.open("data", { create: true, bulk: true });
    const meta = await storage.open("journal", { create: true });
    // A metadata write of 3 bytes at 1: a buffered file takes it as is.
    await meta.write([Buffer.from("abc")], 1);
    await f.write([Buffer.alloc(4096, 1)], 0);
    await f.close();
    await meta.close();
    expect((await readdir(join(dir, "direct"))).sort()).toEqual(["data", "journal"]);
  });
});
