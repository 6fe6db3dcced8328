/**
 * The kernel block path on machines without the nbd module (docs/design.md section 1): nbdfuse turns
 * the export into a file, a loop device turns the file into a block device, and ext4 runs on it.
 * Needs root and /dev/fuse; skipped with a message otherwise.
 */
import { promises as fs, existsSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Pool } from "../../pkg/engine/index.js";
import { NbdServer, type NbdBackend } from "../../pkg/nbd/index.js";
import {
  killStartedProcesses,
  makeTempDir,
  missingCommands,
  patternBuffer,
  run,
  runOk,
  sleep,
  startProcess,
  stopProcess,
} from "./harness.js";
import { MemoryBackend } from "./memory-backend.js";
import { silentLogger } from "../../pkg/log/index.js";

const MiB = 1024 * 1024;
const tools = [
  "nbdfuse",
  "fusermount3",
  "losetup",
  "mkfs.ext4",
  "e2fsck",
  "debugfs",
  "mount",
  "umount",
  "sync",
];
const skipReason =
  process.getuid?.() !== 0
    ? "not running as root"
    : !existsSync("/dev/fuse")
      ? "/dev/fuse is missing"
      : missingCommands(tools).length > 0
        ? `missing ${missingCommands(tools).join(", ")} (Debian: libnbd-bin fuse3 e2fsprogs util-linux)`
        : undefined;
if (skipReason !== undefined) console.warn(`skipping nbdfuse + loop + ext4 test: ${skipReason}`);

afterAll(() => {
  killStartedProcesses();
});

/** A backend to put ext4 on, and a way to read back everything it holds. */
interface BackendUnderTest {
  backend: NbdBackend;
  allocatedChunks(): number;
  close(): Promise<void>;
}

const BACKENDS: Array<[string, (dir: string, size: number) => Promise<BackendUnderTest>]> = [
  [
    "the memory fixture",
    (_dir, size) => {
      const backend = new MemoryBackend({ name: "ext4-vol", size });
      return Promise.resolve({
        backend,
        allocatedChunks: () => backend.allocatedChunks,
        close: () => Promise.resolve(),
      });
    },
  ],
  [
    "the engine",
    async (dir, size) => {
      const pool = await Pool.create({ dir: path.join(dir, "pool"), sizeBytes: 2 * size, autoCommitMs: 0 });
      await pool.createVolume("ext4-vol", size);
      const device = pool.openVolume("ext4-vol");
      return {
        backend: device,
        allocatedChunks: () => pool.allocatedChunks("volume", "ext4-vol").chunks.length,
        async close() {
          device.close();
          const report = await pool.check();
          await pool.close();
          expect(report.problems).toEqual([]);
        },
      };
    },
  ],
];

async function readAll(backend: NbdBackend): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let offset = 0; offset < backend.size; offset += 8 * MiB) {
    parts.push(await backend.read(offset, Math.min(8 * MiB, backend.size - offset)));
  }
  return Buffer.concat(parts);
}

async function isMountPoint(dir: string): Promise<boolean> {
  const mounts = await fs.readFile("/proc/self/mounts", "utf8");
  return mounts.split("\n").some((line) => line.split(" ")[1] === dir);
}

async function waitFor(condition: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe.skipIf(skipReason !== undefined).each(BACKENDS)(
  "nbdfuse + loop device + ext4 over %s",
  (_label, makeBackend) => {
    it("makes, fills, unmounts and checks a clean ext4 filesystem on an export", async () => {
      const size = 128 * MiB;
      const dir = await makeTempDir();
      const fuseDir = path.join(dir, "fuse");
      const mountDir = path.join(dir, "mnt");
      await fs.mkdir(fuseDir);
      await fs.mkdir(mountDir);
      const disk = path.join(fuseDir, "disk");
      const socketPath = path.join(dir, "nbd.sock");
      const server = new NbdServer({ logger: silentLogger });
      let under: BackendUnderTest | undefined;
      let nbdfuse: ReturnType<typeof startProcess> | undefined;
      let loop: string | undefined;
      try {
        under = await makeBackend(dir, size);
        await server.startExport({ backend: under.backend, listen: { socketPath } });
        nbdfuse = startProcess("nbdfuse", [disk, "--unix", socketPath]);
        await waitFor(
          async () =>
            (await fs
              .stat(disk)
              .then((s) => s.size === size)
              .catch(() => false)) || nbdfuse?.exitCode !== null,
          15_000,
          "the nbdfuse file",
        );
        expect(nbdfuse.exitCode, nbdfuse.output()).toBeNull();

        loop = (await runOk("losetup", ["-f", "--show", disk])).stdout.trim();
        expect(loop).toMatch(/^\/dev\/loop\d+$/);
        await runOk("mkfs.ext4", ["-F", "-q", loop], { timeoutMs: 60_000 });

        await runOk("mount", [loop, mountDir]);
        const files = Array.from({ length: 12 }, (_, i) => ({
          name: `file-${i}.bin`,
          data: patternBuffer(i % 3 === 0 ? 3 * MiB + 123 : 40_000 + i, 500 + i),
        }));
        for (const file of files) await fs.writeFile(path.join(mountDir, file.name), file.data);
        await fs.mkdir(path.join(mountDir, "sub"));
        await fs.writeFile(path.join(mountDir, "sub", "hello.txt"), "hello from snapblock\n");
        await runOk("sync", []);
        await runOk("umount", [mountDir]);

        const fsck = await run("e2fsck", ["-fn", loop], { timeoutMs: 60_000 });
        expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0);

        // Mount again: everything written is there, byte for byte.
        await runOk("mount", ["-o", "ro", loop, mountDir]);
        for (const file of files) {
          expect((await fs.readFile(path.join(mountDir, file.name))).equals(file.data)).toBe(true);
        }
        expect(await fs.readFile(path.join(mountDir, "sub", "hello.txt"), "utf8")).toBe(
          "hello from snapblock\n",
        );
        await runOk("umount", [mountDir]);

        // Tear the kernel path down (flushing the loop device and nbdfuse), then check what the
        // backend holds: the page cache above played no part in what is verified below.
        await runOk("losetup", ["-d", loop]);
        loop = undefined;
        await runOk("fusermount3", ["-u", fuseDir]);
        await stopProcess(nbdfuse);
        await server.shutdown();
        expect(server.stats().requests.write).toBeGreaterThan(0);
        expect(under.allocatedChunks()).toBeGreaterThan(100);
        const image = path.join(dir, "backend.img");
        await fs.writeFile(image, await readAll(under.backend));
        const imageFsck = await run("e2fsck", ["-fn", image], { timeoutMs: 60_000 });
        expect(imageFsck.code, imageFsck.stdout + imageFsck.stderr).toBe(0);
        const hello = await runOk("debugfs", ["-R", "cat /sub/hello.txt", image]);
        expect(hello.stdout).toBe("hello from snapblock\n");
        const dumped = path.join(dir, "dumped.bin");
        await runOk("debugfs", ["-R", `dump /${files[3]!.name} ${dumped}`, image]);
        expect((await fs.readFile(dumped)).equals(files[3]!.data)).toBe(true);
      } finally {
        if (await isMountPoint(mountDir)) await run("umount", ["-l", mountDir]);
        if (loop !== undefined) await run("losetup", ["-d", loop]);
        if (await isMountPoint(fuseDir)) await run("fusermount3", ["-u", fuseDir]);
        if (nbdfuse !== undefined) await stopProcess(nbdfuse);
        await server.shutdown();
        await under?.close();
        await fs.rm(dir, { recursive: true, force: true });
      }
    });
  },
);
