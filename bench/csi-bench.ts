/**
 * CSI benchmark (`npm run bench:csi`): CreateSnapshot and CreateVolume-from-snapshot round trips
 * over a real unix socket (grpc-js client, as csi-snapshotter and csi-provisioner call them) while
 * a writer keeps writing 4 KiB blocks to the volume, with 1 and 8 GiB of the volume written.
 * Prints p50/p99 per call and the fsyncs (fsync and fdatasync calls of the process) per
 * CreateSnapshot. The CSI server runs in this process (LocalEngine + CsiServer, exactly what local
 * mode wires) so the writer can reach the volume's blocks directly.
 * Env: BENCH_DIR, BENCH_GIB ("1,8"), BENCH_CALLS (50).
 */
import { mkdtemp, open, rm } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { Prng } from "../pkg/engine/index.js";
import {
  CsiServer,
  NodeService,
  callCsi,
  connectCsi,
  controllerHandlers,
  identityHandlers,
  unavailableNodeVolumeManager,
} from "../pkg/csi/index.js";
import { silentLogger } from "../pkg/log/index.js";
import { LocalEngine } from "../pkg/engine-api/index.js";

const GiB = 2 ** 30;
const sizes = (process.env.BENCH_GIB ?? "1,8").split(",").map(Number);
const CALLS = Number(process.env.BENCH_CALLS ?? 50);

/**
 * Counts the process's fsync and fdatasync calls (FileHandle.sync/datasync: the engine's storage
 * and the atomic file writer both go through them), so a call's cost is shown as syncs, not only
 * as time. Background commits (once a second while writes wait) land in a call now and then.
 */
let syncs = 0;
{
  const probe = await open(import.meta.filename, "r");
  type Sync = (this: unknown) => Promise<void>;
  const proto = Object.getPrototypeOf(probe) as { sync: Sync; datasync: Sync };
  await probe.close();
  for (const method of ["sync", "datasync"] as const) {
    const original = proto[method];
    proto[method] = function (this: unknown): Promise<void> {
      syncs++;
      return original.call(this);
    };
  }
}

function pct(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((s.length * p) / 100))] ?? 0;
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

const root = process.env.BENCH_DIR ?? (await mkdtemp(join(tmpdir(), "snapblock-csi-bench-")));
const engine = new LocalEngine({
  nodeId: "local",
  poolDir: join(root, "pool"),
  metadataFile: join(root, "csi-metadata.json"),
  createIfMissing: { sizeBytes: (Math.max(...sizes) + 4) * 2 * GiB },
});
await engine.open();
const logger = silentLogger;
const server = await CsiServer.start({
  socketPath: join(root, "csi.sock"),
  logger,
  identity: identityHandlers({
    vendorVersion: "bench",
    controller: true,
    ready: () => engine.isReady(),
    logger,
  }),
  ...controllerHandlers({ engine, logger }),
  node: new NodeService({ engine, volumes: unavailableNodeVolumeManager("bench"), logger }).handlers(),
});
const clients = connectCsi(server.socketPath);
const BLOCK = { block: {}, accessMode: { mode: "SINGLE_NODE_WRITER" } };
console.log(
  `# snapblock CSI benchmark: ${cpus().length} x ${cpus()[0]?.model ?? "?"}, Node ${process.version}, ${new Date().toISOString()}`,
);
console.log(
  `# ${CALLS} calls each, one after another, while a writer issues 4 KiB writes (yielding to the event loop between writes)`,
);
console.log("");
console.log(
  "| written | CreateSnapshot p50 | p99 | fsyncs per CreateSnapshot | CreateVolume from snapshot p50 | p99 | writer IOPS meanwhile |",
);
console.log("|---:|---:|---:|---:|---:|---:|---:|");
try {
  for (const gib of sizes) {
    const name = `pvc-bench-${gib}`;
    const { volume } = await callCsi<{ volume: { volumeId: string } }>(clients.controller, "CreateVolume", {
      name,
      volumeCapabilities: [BLOCK],
      capacityRange: { requiredBytes: gib * GiB },
    });
    const device = engine.openVolumeDevice(name);
    const buf = Prng.fill(Buffer.alloc(4 << 20), gib);
    for (let off = 0; off < gib * GiB; off += buf.length) await device.write(off, buf);
    await device.flush();
    let writing = true;
    let writes = 0;
    const g = new Prng(7);
    const page = Prng.fill(Buffer.alloc(4096), 3);
    const writer = (async () => {
      while (writing) {
        await device.write(g.int((gib * GiB) / 4096) * 4096, page);
        writes++;
        await new Promise((resolve) => setImmediate(resolve));
      }
    })();
    const started = performance.now();
    const snap: number[] = [];
    const restore: number[] = [];
    let snapSyncs = 0;
    for (let i = 0; i < CALLS; i++) {
      let snapshotId = "";
      const syncsBefore = syncs;
      snap.push(
        await timed(async () => {
          const r = await callCsi<{ snapshot: { snapshotId: string } }>(
            clients.controller,
            "CreateSnapshot",
            {
              name: `snap-${gib}-${i}`,
              sourceVolumeId: volume.volumeId,
            },
          );
          snapshotId = r.snapshot.snapshotId;
        }),
      );
      snapSyncs += syncs - syncsBefore;
      let volumeId = "";
      restore.push(
        await timed(async () => {
          const r = await callCsi<{ volume: { volumeId: string } }>(clients.controller, "CreateVolume", {
            name: `restored-${gib}-${i}`,
            volumeCapabilities: [BLOCK],
            capacityRange: { requiredBytes: gib * GiB },
            volumeContentSource: { snapshot: { snapshotId } },
          });
          volumeId = r.volume.volumeId;
        }),
      );
      await callCsi(clients.controller, "DeleteVolume", { volumeId });
      await callCsi(clients.controller, "DeleteSnapshot", { snapshotId });
    }
    const seconds = (performance.now() - started) / 1000;
    writing = false;
    await writer;
    device.close();
    await callCsi(clients.controller, "DeleteVolume", { volumeId: volume.volumeId });
    console.log(
      `| ${gib} GiB | ${pct(snap, 50).toFixed(2)} ms | ${pct(snap, 99).toFixed(2)} ms | ${(snapSyncs / CALLS).toFixed(1)} | ${pct(restore, 50).toFixed(2)} ms | ${pct(restore, 99).toFixed(2)} ms | ${(writes / seconds).toFixed(0)} |`,
    );
  }
} finally {
  clients.close();
  await server.shutdown();
  await engine.close();
  if (!process.env.BENCH_DIR) await rm(root, { recursive: true, force: true });
}
