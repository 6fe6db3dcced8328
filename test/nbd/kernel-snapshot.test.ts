/**
 * The kernel path with a snapshot: a volume on the engine, exported over NBD, attached through
 * nbdfuse + a loop device, formatted ext4 and filled with files; then a snapshot is taken,
 * exported read-only, attached and mounted read-only, and it shows exactly the files of that
 * moment while the volume goes on changing (files rewritten, deleted, added). Both file systems
 * check clean with e2fsck afterwards.
 */
import { existsSync, promises as fs } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Pool, type BlockDevice } from "../../pkg/engine/index.js";
import { NbdServer } from "../../pkg/nbd/index.js";
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
import { silentLogger } from "../../pkg/log/index.js";

const MiB = 1024 * 1024;
const tools = ["nbdfuse", "fusermount3", "losetup", "mkfs.ext4", "e2fsck", "mount", "umount", "sync"];
const skipReason =
  process.getuid?.() !== 0
    ? "not running as root"
    : !existsSync("/dev/fuse")
      ? "/dev/fuse is missing"
      : missingCommands(tools).length > 0
        ? `missing ${missingCommands(tools).join(", ")}`
        : undefined;
if (skipReason !== undefined) console.warn(`skipping the kernel-path snapshot test: ${skipReason}`);

afterAll(() => killStartedProcesses());

interface Attached {
  loop: string;
  fuseDir: string;
  nbdfuse: ReturnType<typeof startProcess>;
}

async function attach(
  dir: string,
  name: string,
  socketPath: string,
  size: number,
  readOnly: boolean,
): Promise<Attached> {
  const fuseDir = path.join(dir, `fuse-${name}`);
  await fs.mkdir(fuseDir);
  const disk = path.join(fuseDir, "disk");
  const nbdfuse = startProcess("nbdfuse", [...(readOnly ? ["-r"] : []), disk, "--unix", socketPath]);
  for (let i = 0; i < 300; i++) {
    const ok = await fs
      .stat(disk)
      .then((s) => s.size === size)
      .catch(() => false);
    if (ok) break;
    if (nbdfuse.exitCode !== null) throw new Error(`nbdfuse exited: ${nbdfuse.output()}`);
    await sleep(50);
  }
  const loop = (await runOk("losetup", ["-f", "--show", ...(readOnly ? ["-r"] : []), disk])).stdout.trim();
  return { loop, fuseDir, nbdfuse };
}

async function detach(a: Attached): Promise<void> {
  await run("losetup", ["-d", a.loop]);
  await run("fusermount3", ["-u", a.fuseDir]);
  await stopProcess(a.nbdfuse);
}

async function mounted(dir: string): Promise<boolean> {
  const info = await fs.readFile("/proc/self/mountinfo", "utf8");
  return info.split("\n").some((line) => line.split(" ")[4] === dir);
}

describe.skipIf(skipReason !== undefined)("kernel path: a snapshot mounted read-only", () => {
  it("shows exactly the files at snapshot time while the volume moves on", async () => {
    const dir = await makeTempDir("snapblock-ksnap-");
    const size = 96 * MiB;
    const server = new NbdServer({ logger: silentLogger });
    const volMnt = path.join(dir, "vol");
    const snapMnt = path.join(dir, "snap");
    await fs.mkdir(volMnt);
    await fs.mkdir(snapMnt);
    const attached: Attached[] = [];
    const handles: BlockDevice[] = [];
    let pool: Pool | undefined;
    try {
      pool = await Pool.create({ dir: path.join(dir, "pool"), sizeBytes: 512 * MiB });
      await pool.createVolume("vol", size);
      const vol = pool.openVolume("vol");
      handles.push(vol);
      await server.startExport({ backend: vol, listen: { socketPath: path.join(dir, "vol.sock") } });
      const va = await attach(dir, "vol", path.join(dir, "vol.sock"), size, false);
      attached.push(va);
      await runOk("mkfs.ext4", ["-F", "-q", va.loop], { timeoutMs: 60_000 });
      await runOk("mount", [va.loop, volMnt]);
      const before = new Map<string, Buffer>();
      for (let i = 0; i < 10; i++)
        before.set(`f${i}.bin`, patternBuffer(i % 2 ? 2 * MiB + i : 30_000 + i, i));
      for (const [name, data] of before) await fs.writeFile(path.join(volMnt, name), data);
      // Quiesce the file system for a consistent snapshot, as a CSI snapshotter's freeze would.
      await runOk("sync", []);
      await runOk("fsfreeze", ["--freeze", volMnt]);
      try {
        await pool.createSnapshot("vol", "snap");
      } finally {
        await runOk("fsfreeze", ["--unfreeze", volMnt]);
      }

      // The volume moves on: rewrite, delete, add.
      await fs.writeFile(path.join(volMnt, "f0.bin"), patternBuffer(MiB, 99));
      await fs.rm(path.join(volMnt, "f1.bin"));
      await fs.writeFile(path.join(volMnt, "new.bin"), patternBuffer(3 * MiB, 77));
      await runOk("sync", []);

      const snap = pool.openSnapshot("snap");
      handles.push(snap);
      const exported = await server.startExport({
        backend: snap,
        listen: { socketPath: path.join(dir, "snap.sock") },
      });
      expect(exported.readOnly).toBe(true);
      const sa = await attach(dir, "snap", path.join(dir, "snap.sock"), size, true);
      attached.push(sa);
      // noload: the snapshot's journal may hold the frozen moment's last transactions; a
      // read-only device cannot replay them, and the files are all in place after the freeze.
      await runOk("mount", ["-o", "ro,noload", sa.loop, snapMnt]);
      expect((await fs.readdir(snapMnt)).filter((n) => n !== "lost+found").sort()).toEqual(
        [...before.keys()].sort(),
      );
      for (const [name, data] of before)
        expect((await fs.readFile(path.join(snapMnt, name))).equals(data), name).toBe(true);
      await expect(fs.writeFile(path.join(snapMnt, "x"), "no")).rejects.toThrow(/EROFS|read-only/);
      // The volume has its new content meanwhile.
      expect((await fs.readFile(path.join(volMnt, "f0.bin"))).equals(patternBuffer(MiB, 99))).toBe(true);
      expect(existsSync(path.join(volMnt, "f1.bin"))).toBe(false);

      await runOk("umount", [snapMnt]);
      await runOk("umount", [volMnt]);
      const volCheck = await run("e2fsck", ["-fn", va.loop], { timeoutMs: 60_000 });
      expect(volCheck.code, volCheck.stdout + volCheck.stderr).toBe(0);
      const snapCheck = await run("e2fsck", ["-fn", sa.loop], { timeoutMs: 60_000 });
      expect(snapCheck.code, snapCheck.stdout + snapCheck.stderr).toBe(0);
    } finally {
      for (const m of [snapMnt, volMnt]) if (await mounted(m)) await run("umount", ["-l", m]);
      for (const a of attached.reverse()) await detach(a);
      await server.shutdown();
      for (const h of handles) (h as BlockDevice & { close(): void }).close();
      if (pool) {
        expect((await pool.check()).problems).toEqual([]);
        await pool.close();
      }
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
