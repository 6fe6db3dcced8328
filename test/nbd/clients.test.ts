/**
 * Real, unmodified NBD clients (libnbd's nbdinfo and nbdcopy, qemu-img, qemu-io, fio's nbd
 * engine) against the server on a temp unix socket (docs/design.md section 3: "Real clients must
 * work unmodified").
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import {
  fioVerified,
  killStartedProcesses,
  makeTempDir,
  missingCommands,
  patternBuffer,
  run,
  runOk,
  serveMemory,
  type ServeOptions,
  type TestExport,
} from "./harness.js";

const MiB = 1024 * 1024;
const needed = ["nbdinfo", "nbdcopy", "qemu-img", "qemu-io", "fio"];
const missing = missingCommands(needed);
if (missing.length > 0) {
  console.warn(
    `skipping NBD client tests: missing ${missing.join(", ")} (Debian: qemu-utils libnbd-bin fio)`,
  );
}

const exports: TestExport[] = [];
const dirs: string[] = [];

async function serve(options: ServeOptions = {}): Promise<TestExport> {
  const t = await serveMemory(options);
  exports.push(t);
  return t;
}

/** A sparse raw image: data islands at the given MiB offsets, holes elsewhere. */
async function sparseImage(size: number, islandsMiB: number[]): Promise<{ file: string; content: Buffer }> {
  const dir = await makeTempDir();
  dirs.push(dir);
  const file = path.join(dir, "image.raw");
  const content = Buffer.alloc(size);
  const handle = await fs.open(file, "w");
  try {
    await handle.truncate(size);
    for (const [i, at] of islandsMiB.entries()) {
      const data = patternBuffer(256 * 1024, 100 + i);
      data.copy(content, at * MiB + 4096);
      await handle.write(data, 0, data.length, at * MiB + 4096);
    }
  } finally {
    await handle.close();
  }
  return { file, content };
}

afterEach(async () => {
  await Promise.all(exports.splice(0).map((t) => t.cleanup()));
});

afterAll(async () => {
  killStartedProcesses();
  await Promise.all(dirs.map((d) => fs.rm(d, { recursive: true, force: true })));
});

describe.skipIf(missing.length > 0)("real NBD clients", () => {
  it("nbdinfo shows the export, lists it and maps its allocation", async () => {
    const t = await serve({
      name: "vol-info",
      size: 8 * MiB,
      exportOptions: { description: "seen by nbdinfo" },
    });
    await t.backend.write(MiB, Buffer.alloc(2 * 64 * 1024, 1));
    const info = JSON.parse((await runOk("nbdinfo", ["--json", t.uri])).stdout) as {
      protocol: string;
      exports: Array<Record<string, unknown>>;
    };
    expect(info.protocol).toBe("newstyle-fixed");
    expect(info.exports[0]).toMatchObject({
      "export-name": "vol-info",
      description: "seen by nbdinfo",
      "export-size": 8 * MiB,
      is_read_only: false,
      can_multi_conn: true,
      can_flush: true,
      can_fua: true,
      can_trim: true,
      can_zero: true,
      can_fast_zero: true,
      can_df: true,
      block_size_minimum: 1,
      block_size_preferred: 65536,
      block_size_maximum: 32 * MiB,
    });
    expect(info.exports[0]?.contexts).toContain("base:allocation");

    const list = (await runOk("nbdinfo", ["--list", "--json", t.uri])).stdout;
    expect(
      (JSON.parse(list) as { exports: Array<{ "export-name": string }> }).exports.map(
        (e) => e["export-name"],
      ),
    ).toEqual(["vol-info"]);

    const map = JSON.parse((await runOk("nbdinfo", ["--map", "--json", t.uri])).stdout) as Array<{
      offset: number;
      length: number;
      type: number;
    }>;
    expect(map).toEqual([
      expect.objectContaining({ offset: 0, length: MiB, type: 3 }),
      expect.objectContaining({ offset: MiB, length: 128 * 1024, type: 0 }),
      expect.objectContaining({ offset: MiB + 128 * 1024, length: 7 * MiB - 128 * 1024, type: 3 }),
    ]);
  });

  it("qemu-io writes and reads patterns, qemu-img sees the size", async () => {
    const t = await serve({ size: 16 * MiB });
    const io = await runOk("qemu-io", [
      "-f",
      "raw",
      t.uri,
      "-c",
      "write -P 0xab 0 1M",
      "-c",
      "read -P 0xab 0 1M",
      "-c",
      "write -z 4M 1M",
      "-c",
      "read -P 0 4M 1M",
      "-c",
      "discard 8M 1M",
      "-c",
      "aio_write -P 0x11 9M 64k",
      "-c",
      "aio_write -P 0x22 10M 64k",
      "-c",
      "aio_flush",
      "-c",
      "read -P 0x22 10M 64k",
      "-c",
      "flush",
    ]);
    expect(io.stdout).not.toMatch(/fail|mismatch/i);
    expect(
      t.backend
        .snapshot()
        .subarray(0, MiB)
        .every((b) => b === 0xab),
    ).toBe(true);
    const info = JSON.parse((await runOk("qemu-img", ["info", "--output=json", t.uri])).stdout) as {
      "virtual-size": number;
    };
    expect(info["virtual-size"]).toBe(16 * MiB);
  });

  it("qemu-img converts an image with holes in and out and compares equal", async () => {
    const size = 64 * MiB;
    const t = await serve({ size });
    const { file, content } = await sparseImage(size, [0, 7, 40, 63]);
    await runOk("qemu-img", ["convert", "-n", "-f", "raw", "-O", "raw", file, t.uri]);
    expect(t.backend.snapshot().equals(content)).toBe(true);
    // Holes stayed holes: only the chunks under the islands are allocated.
    expect(t.backend.allocatedChunks).toBeLessThanOrEqual(4 * 5);
    await runOk("qemu-img", ["compare", "-f", "raw", "-F", "raw", file, t.uri]);
    const back = path.join(path.dirname(file), "back.raw");
    await runOk("qemu-img", ["convert", "-f", "raw", "-O", "raw", t.uri, back]);
    expect((await fs.readFile(back)).equals(content)).toBe(true);
  });

  it("nbdcopy round-trips an image with holes over several connections (multi-conn)", async () => {
    const size = 64 * MiB;
    let opened = 0;
    const t = await serve({ size, observer: { connectionOpened: () => (opened += 1) } });
    const { file, content } = await sparseImage(size, [1, 2, 30, 50]);
    await runOk("nbdcopy", ["--flush", file, t.uri]);
    // libnbd uses up to 4 connections when the server advertises NBD_FLAG_CAN_MULTI_CONN.
    expect(opened).toBeGreaterThan(1);
    expect(t.backend.snapshot().equals(content)).toBe(true);
    expect(t.backend.counters.flushes).toBeGreaterThan(0);
    const back = path.join(path.dirname(file), "copy.raw");
    await runOk("nbdcopy", [t.uri, back]);
    expect((await fs.readFile(back)).equals(content)).toBe(true);
  });

  it("nbdcopy uses a single connection when multi-conn is disabled", async () => {
    let opened = 0;
    const t = await serve({
      size: 8 * MiB,
      observer: { connectionOpened: () => (opened += 1) },
      exportOptions: { multiConn: false },
    });
    const { file, content } = await sparseImage(8 * MiB, [3]);
    await runOk("nbdcopy", [file, t.uri]);
    expect(opened).toBe(1);
    expect(t.backend.snapshot().equals(content)).toBe(true);
  });

  it("fio's nbd engine passes crc32c verification with concurrent jobs", async () => {
    const t = await serve({ size: 64 * MiB });
    const jobs = await fioVerified(
      [
        "--name=nbd-verify",
        "--ioengine=nbd",
        `--uri=${t.uri}`,
        "--rw=randwrite",
        "--bs=4k-128k",
        "--size=16M",
        "--numjobs=2",
        "--offset_increment=32M",
        "--iodepth=32",
      ],
      90_000,
    );
    expect(jobs).toHaveLength(2);
    // With mixed block sizes fio stops short of `size`; everything written is read back and verified.
    for (const job of jobs) expect(job.written).toBeGreaterThan(8 * MiB);
  });

  it("a read-only export refuses writes as qemu-io sees it", async () => {
    const t = await serve({ size: 4 * MiB, readOnly: true, name: "snap" });
    // qemu honours NBD_FLAG_READ_ONLY itself: it will not even open the export read-write...
    const rw = await run("qemu-io", ["-f", "raw", t.uri, "-c", "write -P 0xab 0 64k"]);
    expect(rw.code).not.toBe(0);
    expect(rw.stderr + rw.stdout).toMatch(/read-only|Permission denied/i);
    // ...and refuses writes when opened read-only, while reads work.
    const ro = await run("qemu-io", [
      "-r",
      "-f",
      "raw",
      t.uri,
      "-c",
      "write -P 0xab 0 64k",
      "-c",
      "read -P 0 0 64k",
    ]);
    expect(ro.stderr + ro.stdout).toMatch(/read-only/i);
    expect(ro.stdout).toMatch(/read 65536\/65536 bytes/);
    expect(t.backend.counters.writes).toBe(0);
  });

  it("qemu-io reports EPERM when the backend refuses a write as read-only", async () => {
    // The export was opened read-write, then the device turned read-only: the write reaches the
    // server, the backend throws READ_ONLY, and the client receives NBD_EPERM.
    const t = await serve({ size: 4 * MiB });
    t.backend.readOnly = true;
    const result = await run("qemu-io", ["-f", "raw", t.uri, "-c", "write -P 0xab 0 64k"]);
    expect(result.stdout + result.stderr).toMatch(/Operation not permitted/);
    expect(t.server.stats().requestErrors.EPERM).toBeGreaterThan(0);
  });
});
