/**
 * Bench-only runner: one pool, one volume exported over NBD on a unix socket, for fio and the
 * peers script to drive. Not the product's CLI (that is cmd/); it exists so the NBD benchmark can
 * run the engine + NBD server alone. Args: <dir> <socket> <size-bytes> [chunk-size].
 * Signals: SIGUSR1 takes a snapshot (prints "snapshot <name>"); SIGTERM stops cleanly.
 * BENCH_METRICS=1: the engine and NBD metrics observers wired as the node plugin wires them
 * (cmd/node-side.ts), so the figures include what every request costs the metrics.
 * Prints "ready" when the export listens.
 */
import { Pool, Prng } from "../pkg/engine/index.js";
import { NbdServer, type NbdStats } from "../pkg/nbd/index.js";
import { silentLogger } from "../pkg/log/index.js";
import { createMetricsRegistry, EngineMetrics, NbdMetrics } from "../pkg/metrics/index.js";
import { Session } from "node:inspector/promises";
import { writeFile } from "node:fs/promises";

const [dir, socketPath, sizeArg, chunkArg] = process.argv.slice(2);
const size = Number(sizeArg);
// BENCH_DATA_IO=buffered|direct|hybrid: how the data file meets the page cache.
const dataIo = (["direct", "hybrid"] as const).find((m) => m === process.env.BENCH_DATA_IO) ?? "buffered";
const registry = process.env.BENCH_METRICS === "1" ? createMetricsRegistry() : undefined;
const engineMetrics = registry && new EngineMetrics({ registry, pool: "bench", stats: () => pool.stats() });
const nbdMetrics = registry && new NbdMetrics({ registry, stats: (): NbdStats => server.stats() });
const pool = await Pool.create({
  dir: dir!,
  sizeBytes: size * 3,
  chunkSize: Number(chunkArg ?? 65536),
  dataIo,
  ...(engineMetrics ? { observer: engineMetrics.observer } : {}),
});
await pool.createVolume("bench", size);
const vol = pool.openVolume("bench");
// Written through, like the peers' images, so reads hit real data and writes go in place.
const buf = Prng.fill(Buffer.alloc(4 << 20), 5);
for (let off = 0; off < size; off += buf.length)
  await vol.write(off, buf.subarray(0, Math.min(buf.length, size - off)));
await vol.flush();
const server: NbdServer = new NbdServer({
  logger: silentLogger,
  ...(nbdMetrics ? { observer: nbdMetrics.observer } : {}),
});
await server.startExport({ backend: vol, listen: { socketPath: socketPath! }, name: "bench" });
// BENCH_CPU_PROF=<file>: a CPU profile of the serving only (not the fill), written at SIGTERM.
const profileFile = process.env.BENCH_CPU_PROF;
const profiler = profileFile ? new Session() : undefined;
if (profiler) {
  profiler.connect();
  await profiler.post("Profiler.enable");
  await profiler.post("Profiler.start");
}
let snapshots = 0;
process.on("SIGUSR1", () => {
  const name = `bench-snap-${++snapshots}`;
  pool.createSnapshot("bench", name).then(
    () =>
      process.stdout.write(
        `snapshot ${name} partial-chunks=${pool.space.partials.size} free-chunks=${pool.space.free}\n`,
      ),
    (err: unknown) => process.stdout.write(`snapshot failed ${String(err)}\n`),
  );
});
process.on("SIGTERM", () => {
  void (async () => {
    await server.shutdown();
    if (profiler) {
      const { profile } = await profiler.post("Profiler.stop");
      await writeFile(profileFile!, JSON.stringify(profile));
    }
    vol.close();
    await pool.close();
    process.exit(0);
  })();
});
process.stdout.write("ready\n");
