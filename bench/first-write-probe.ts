/**
 * First-write-after-snapshot probe (`npx tsx bench/first-write-probe.ts`): the redirect-on-write
 * path in isolation. Fills a 2 GiB volume, then writes 4 KiB into every 64 KiB chunk in order
 * (steady state: every chunk owned, in place), then takes a snapshot and writes the same blocks
 * again, three times over (after the first, second and third snapshot: the rewrite of a chunk
 * that is still partial from the previous round), and prints per pass p50/mean/p99 latency, the
 * pass's writes per second and its time relative to the steady pass (the penalty).
 * Env: QD (writes in flight, default 1), FILL=0 turns the background partial-chunk filler off,
 * ORDER=random writes 2,000 random distinct chunks instead of every chunk, GIB (volume size, 2),
 * PILE (the pool's partial-chunk limit, partialChunkLimit; default the pool's), POOL_X (the pool's
 * size in volume sizes, default 4: three rounds of partial chunks then fill it, and below 10 % free
 * the filler completes every partial chunk beside the writes; 8 leaves room).
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Pool, Prng } from "../pkg/engine/index.js";

const QD = Number(process.env.QD ?? 1);
const SIZE = Number(process.env.GIB ?? 2) * 2 ** 30;
const dir = mkdtempSync(join(tmpdir(), "sb-"));
/** Redirects that rewrote a whole chunk (a shared partial chunk read whole and merged). */
let merged = 0;
const pool = await Pool.create({
  dir: join(dir, "p"),
  sizeBytes: Number(process.env.POOL_X ?? 4) * SIZE,
  fillPartials: process.env.FILL !== "0",
  ...(process.env.PILE ? { partialChunkLimit: Number(process.env.PILE) } : {}),
  observer: { redirected: (e) => (merged += e.shared.merged) },
});
await pool.createVolume("v", SIZE);
const h = pool.openVolume("v");
const buf = Prng.fill(Buffer.alloc(4 << 20), 1);
for (let o = 0; o < SIZE; o += buf.length) await h.write(o, buf);
await h.flush();
const page = Buffer.alloc(4096, 7);
const chunks = SIZE / 65536;
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

let steadySeconds = 0;
async function pass(label: string): Promise<void> {
  const lat: number[] = [];
  let next = 0;
  merged = 0;
  const started = performance.now();
  // QD workers take the next chunk in order: QD writes in flight at any time.
  await Promise.all(
    Array.from({ length: QD }, async () => {
      while (next < order.length) {
        const c = order[next++]!;
        const t = performance.now();
        await h.write(c * 65536 + 8192, page);
        lat.push((performance.now() - t) * 1000);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  if (label === "steady") steadySeconds = seconds;
  lat.sort((a, b) => a - b);
  console.log(
    `| ${label} | ${QD} | ${lat[lat.length >> 1]!.toFixed(1)} | ${(lat.reduce((a, b) => a + b) / lat.length).toFixed(1)} | ${lat[Math.floor(lat.length * 0.99)]!.toFixed(1)} | ${(order.length / seconds).toFixed(0)} | ${(seconds / steadySeconds).toFixed(2)}x | ${merged} | ${pool.space.partials.size} |`,
  );
}

console.log(
  `# first-write probe: ${order.length} writes of 4 KiB per pass, QD ${QD}, filler ${process.env.FILL === "0" ? "off" : "on"}, partial-chunk limit ${process.env.PILE ?? "default"}`,
);
console.log(
  "| pass | QD | p50 us | mean us | p99 us | writes/s | time vs steady | whole-chunk merges | partial chunks after |",
);
console.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
await pass("steady");
for (let s = 1; s <= Number(process.env.ROUNDS ?? 3); s++) {
  await pool.createSnapshot("v", `s${s}`);
  // DROP=1: the page cache dropped before each round (needs root): backing chunks read from disk.
  if (process.env.DROP === "1") execFileSync("sh", ["-c", "sync; echo 3 > /proc/sys/vm/drop_caches"]);
  await pass(`after snapshot ${s}`);
}
h.close();
await pool.close();
await rm(dir, { recursive: true, force: true });
