/**
 * The NBD server in front of the real engine: a volume exported read-write, a snapshot of it
 * exported read-only, driven by real clients. Also checks at compile time that the engine's
 * BlockDevice satisfies NbdBackend structurally (pkg/nbd never imports the engine).
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Pool, type BlockDevice } from "../../pkg/engine/index.js";
import { NbdServer, type NbdBackend } from "../../pkg/nbd/index.js";
import {
  fioVerified,
  killStartedProcesses,
  makeTempDir,
  missingCommands,
  patternBuffer,
  run,
  runOk,
} from "./harness.js";
import { silentLogger } from "../../pkg/log/index.js";

/** Compile-time check: if the engine's BlockDevice stops being an NbdBackend, typecheck fails. */
export const blockDeviceIsNbdBackend = (device: BlockDevice): NbdBackend => device;

const MiB = 1024 * 1024;
const missing = missingCommands(["qemu-img", "qemu-io", "nbdinfo", "nbdcopy"]);
if (missing.length > 0) console.warn(`skipping NBD + engine test: missing ${missing.join(", ")}`);

afterAll(() => {
  killStartedProcesses();
});

describe.skipIf(missing.length > 0)("NBD server over the engine", () => {
  it("serves a volume read-write and its snapshot read-only to real clients", async () => {
    const dir = await makeTempDir();
    const server = new NbdServer({ logger: silentLogger });
    let pool: Pool | undefined;
    const devices: Array<{ close(): void }> = [];
    try {
      pool = await Pool.create({ dir: path.join(dir, "pool"), sizeBytes: 256 * MiB, autoCommitMs: 0 });
      await pool.createVolume("vol", 32 * MiB);
      const volume = pool.openVolume("vol");
      devices.push(volume);
      const volumeExport = await server.startExport({
        backend: volume,
        listen: { socketPath: path.join(dir, "vol.sock") },
      });

      // A sparse image in, through qemu-img: data where the image has data, holes elsewhere.
      const image = path.join(dir, "image.raw");
      const content = Buffer.alloc(32 * MiB);
      patternBuffer(MiB, 1).copy(content, 3 * MiB);
      patternBuffer(200_000, 2).copy(content, 20 * MiB + 12_345);
      await fs.writeFile(image, content);
      await runOk("qemu-img", ["convert", "-n", "-f", "raw", "-O", "raw", image, volumeExport.uri]);
      await runOk("qemu-img", ["compare", "-f", "raw", "-F", "raw", image, volumeExport.uri]);
      const map = JSON.parse(
        (await runOk("nbdinfo", ["--map", "--json", volumeExport.uri])).stdout,
      ) as Array<{
        offset: number;
        length: number;
        type: number;
      }>;
      const dataBytes = map.filter((e) => e.type === 0).reduce((sum, e) => sum + e.length, 0);
      expect(dataBytes).toBeGreaterThanOrEqual(MiB + 200_000);
      expect(dataBytes).toBeLessThan(4 * MiB);

      // Snapshot, then change the volume: the snapshot export still reads the old content.
      await pool.createSnapshot("vol", "snap");
      const snapshot = pool.openSnapshot("snap");
      devices.push(snapshot);
      const snapshotExport = await server.startExport({
        backend: snapshot,
        listen: { socketPath: path.join(dir, "snap.sock") },
      });
      expect(snapshotExport.readOnly).toBe(true);
      await runOk("qemu-io", ["-f", "raw", volumeExport.uri, "-c", "write -P 0xee 3M 64k", "-c", "flush"]);
      await runOk("qemu-img", ["compare", "-f", "raw", "-F", "raw", image, snapshotExport.uri]);
      const differs = await run("qemu-img", ["compare", "-f", "raw", "-F", "raw", image, volumeExport.uri]);
      expect(differs.code).toBe(1);
      const copy = path.join(dir, "snap.raw");
      await runOk("nbdcopy", [snapshotExport.uri, copy]);
      expect((await fs.readFile(copy)).equals(content)).toBe(true);
      const refused = await run("qemu-io", ["-f", "raw", snapshotExport.uri, "-c", "write 0 512"]);
      expect(refused.code).not.toBe(0);

      await server.shutdown();
      expect((await pool.check()).ok).toBe(true);
    } finally {
      await server.shutdown();
      for (const device of devices) device.close();
      await pool?.close();
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it("fio verifies mixed-size writes and reads over two connections (buffers reused under load)", async () => {
    // The server reads payloads into reused memory and serves reads from reused buffers (docs/nbd.md
    // "Memory on the data path"): concurrent requests of every size class must never see each
    // other's bytes.
    const dir = await makeTempDir();
    const server = new NbdServer({ logger: silentLogger });
    let pool: Pool | undefined;
    let volume: { close(): void } | undefined;
    try {
      pool = await Pool.create({ dir: path.join(dir, "pool"), sizeBytes: 256 * MiB, autoCommitMs: 0 });
      await pool.createVolume("vol", 64 * MiB);
      const device = pool.openVolume("vol");
      volume = device;
      const exported = await server.startExport({
        backend: device,
        listen: { socketPath: path.join(dir, "v.sock") },
      });
      const jobs = await fioVerified(
        [
          "--name=reuse-verify",
          "--ioengine=nbd",
          `--uri=${exported.uri}`,
          "--rw=randwrite",
          "--bsrange=1k-2m",
          "--bs_unaligned=1",
          "--size=24M",
          "--numjobs=2",
          "--offset_increment=32M",
          "--iodepth=16",
        ],
        120_000,
      );
      expect(jobs).toHaveLength(2);
      for (const job of jobs) expect(job.written).toBeGreaterThan(12 * MiB);
      await server.shutdown();
      expect((await pool.check()).ok).toBe(true);
    } finally {
      await server.shutdown();
      volume?.close();
      await pool?.close();
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
