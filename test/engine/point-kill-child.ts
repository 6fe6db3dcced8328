/**
 * Child process of the recovery-point SIGKILL test: opens (or creates) a pool on real files, runs
 * the point scheduler (takes and thins points, as the node's engine side does) while a writer
 * keeps writing to two protected volumes, and prints a JSON line for every point taken once its
 * take has returned (the point is committed then; stdout to a pipe is synchronous on Linux, so a
 * printed point was durable before any kill). The scheduler's clock runs SPEED times faster than
 * the real one from `clockStart`, so a second of policy time passes in 1/SPEED s. Now and then it
 * pins a listed point (as `snapblock volume points --kubernetes` does) and prints it once pinned.
 * Usage: point-kill-child.ts <pool-dir> <seed> <clock-start-ms> <policy> [create]
 */
import { PointScheduler, Pool, Prng, type EngineObserver } from "../../pkg/engine/index.js";

const SPEED = 10;
const VOLUMES = ["a", "b"];
const CHUNK = 4096;
const VOLUME_BYTES = 64 * CHUNK;

const [dir, seedArg, clockArg, policy, create] = process.argv.slice(2);
const print = (msg: object): void => void process.stdout.write(JSON.stringify(msg) + "\n");
const observer: EngineObserver = {
  pointTaken: (e) =>
    print({ taken: e.name, volume: e.volume, at: pool.getSnapshot(e.name).createdAt.getTime() }),
  pointsDeleted: (e) => print({ deleted: e.count, volume: e.volume, reason: e.reason }),
};
const options = { dir: dir!, autoCommitMs: 50, observer };
const pool =
  create === "create"
    ? await Pool.create({ ...options, sizeBytes: 16384 * CHUNK, chunkSize: CHUNK })
    : await Pool.open(options);
if (create === "create") {
  for (const v of VOLUMES) {
    await pool.createVolume(v, VOLUME_BYTES);
    await pool.setProtection(v, policy!);
  }
}
const realStart = Date.now();
const clockStart = Number(clockArg);
const now = (): number => clockStart + (Date.now() - realStart) * SPEED;
const scheduler = new PointScheduler({
  pool,
  now,
  tickMs: 1000 / SPEED,
  onError: (volume, err) => print({ error: err.message, volume }),
});
print({ ready: true, realStart, clockStart });
scheduler.start();
// What a reader of the pool's listings sees (`snapblock volume points` asks the same listing):
// printed too, as a point a user saw must survive like one the scheduler reported.
setInterval(() => {
  const listed = VOLUMES.flatMap((v) => pool.listPoints(v).map((p) => [p.name, v, p.createdAt.getTime()]));
  print({ listed });
}, 5).unref();
const g = new Prng(Number(seedArg));
const handles = VOLUMES.map((v) => pool.openVolume(v));
const block = Buffer.alloc(CHUNK);
let pins = 0;
for (let i = 0; ; i++) {
  if (i % 150 === 149 && pins < 3) {
    const volume = VOLUMES[g.int(VOLUMES.length)]!;
    const candidates = pool.listPoints(volume).filter((p) => !p.pinned);
    const point = candidates[g.int(candidates.length)];
    if (point) {
      // Thinned meanwhile (NOT_FOUND): another one next time.
      const pinned = await pool.pinPoint(point.name, true).catch(() => undefined);
      if (pinned) {
        pins++;
        print({ pinned: pinned.name, volume, at: pinned.createdAt.getTime() });
      }
    }
  }
  const h = handles[g.int(handles.length)]!;
  block.fill(g.int(255) + 1);
  await h.write(g.int(VOLUME_BYTES / CHUNK) * CHUNK, block);
  if (i % 50 === 0) await h.flush();
  // Like requests arriving from sockets: the event loop turns between writes, so ticks run.
  await new Promise<void>((resolve) => setTimeout(resolve, 1));
}
