/**
 * First-write-after-snapshot probe (`npx tsx bench/first-write-probe.ts`): the redirect-on-write
 * path in isolation. Fills a 2 GiB volume, then writes 4 KiB into every 64 KiB chunk in order (QD1)
 * before and after a snapshot, and prints p50/mean/p99 per pass. FILL=0 turns the background
 * partial-chunk filler off, to separate its cost from the write path's.
 */
import { mkdtempSync } from "node:fs";
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Pool, Prng } from "../pkg/engine/index.js";
const dir = mkdtempSync(join(tmpdir(), "sb-"));
const pool = await Pool.create({
  dir: join(dir, "p"),
  sizeBytes: 8 * 2 ** 30,
  fillPartials: process.env.FILL !== "0",
});
const SIZE = 2 * 2 ** 30;
await pool.createVolume("v", SIZE);
const h = pool.openVolume("v");
const buf = Prng.fill(Buffer.alloc(4 << 20), 1);
for (let o = 0; o < SIZE; o += buf.length) await h.write(o, buf);
await h.flush();
const page = Buffer.alloc(4096, 7);
const chunks = SIZE / 65536;
/** ORDER=random: 2,000 random distinct chunks (as the engine bench does); default: every chunk in order. */
const order: number[] = [];
if (process.env.ORDER === "random") {
  const g = new Prng(11);
  const seen = new Set<number>();
  while (order.length < 2000) {
    const c = g.int(chunks);
    if (!seen.has(c)) {
      seen.add(c);
      order.push(c);
    }
  }
} else {
  for (let c = 0; c < chunks; c++) order.push(c);
}
async function pass(label: string): Promise<void> {
  const lat: number[] = [];
  for (const c of order) {
    const t = performance.now();
    await h.write(c * 65536 + 8192, page);
    lat.push((performance.now() - t) * 1000);
  }
  lat.sort((a, b) => a - b);
  console.log(
    label.padEnd(16),
    "p50",
    lat[lat.length >> 1]!.toFixed(1),
    "mean",
    (lat.reduce((a, b) => a + b) / lat.length).toFixed(1),
    "p99",
    lat[Math.floor(lat.length * 0.99)]!.toFixed(1),
  );
}
await pass("steady");
await pool.createSnapshot("v", "s");
await pass("after-snapshot");
h.close();
await pool.close();
await rm(dir, { recursive: true, force: true });
