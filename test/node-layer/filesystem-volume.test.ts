/**
 * A filesystem volume's whole life on a node, through the nbdfuse + loop path, with a real NBD
 * server (nbdkit), real mounts and real mkfs: attach -> blank -> mkfs -> stage (mount) -> write ->
 * publish read-only (bind) -> EROFS there -> unpublish -> unstage -> detach -> nothing left; then
 * attach again and find the data and the filesystem intact.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { NbdfuseLoopAttacher, type BlockAttacher } from "../../pkg/attach/index.js";
import {
  bindMount,
  checkFilesystem,
  ensureFilesystem,
  findMount,
  findMountsOfDevice,
  mountFilesystem,
  prepareMountTarget,
  probeFilesystem,
  unmount,
  volumeStats,
  type FilesystemType,
} from "../../pkg/mount/index.js";
import {
  MiB,
  expectErrno,
  leftoversUnder,
  makeTempDir,
  pattern,
  scrub,
  skipReason,
  startNbdkit,
  type Nbdkit,
} from "./harness.js";

const skip = await skipReason();
if (skip !== undefined) console.warn(`skipping node-layer filesystem tests: ${skip}`);

let dir = "";
let nbdkit: Nbdkit | undefined;
afterEach(async () => {
  // Mounts and devices first (they flush through nbdkit), the server last.
  if (dir !== "") await scrub(dir);
  await nbdkit?.stop();
  nbdkit = undefined;
  dir = "";
});

/** xfsprogs 6.x refuses filesystems under 300 MB. */
const SIZES: Record<FilesystemType, number> = { ext4: 128 * MiB, xfs: 320 * MiB };

describe.skipIf(skip !== undefined)("filesystem volume through nbdfuse + loop", () => {
  it.each(["ext4", "xfs"] as const)(
    "%s: stage, publish read-only, unpublish, unstage, detach, re-attach",
    async (fsType) => {
      dir = await makeTempDir();
      const size = SIZES[fsType];
      nbdkit = await startNbdkit(dir, ["memory", String(size)]);
      const stateDir = path.join(dir, "state");
      const staging = path.join(dir, "staging");
      const publish = path.join(dir, "pods", "p1", "volume");
      const attacher: BlockAttacher = new NbdfuseLoopAttacher({ stateDir });
      const request = {
        key: "pvc-1",
        socketPath: nbdkit.socketPath,
        exportName: "pvc-1",
        readOnly: false,
        sizeBytes: size,
      };

      // NodeStage: attach, format on first use, mount.
      const attachment = await attacher.attach(request);
      expect(attachment).toMatchObject({ kind: "nbdfuse-loop", health: "ok", sizeBytes: size });
      const device = attachment.devicePath!;
      expect(device).toMatch(/^\/dev\/loop\d+$/);
      expect(await attacher.attach(request)).toEqual(attachment);
      expect(await probeFilesystem(device)).toEqual({ kind: "blank" });
      expect(await ensureFilesystem({ device, fsType })).toBe("formatted");
      expect(await probeFilesystem(device)).toMatchObject({ kind: "filesystem", fsType });
      await prepareMountTarget({ path: staging, kind: "directory" });
      expect(
        await mountFilesystem({ device, target: staging, fsType, readOnly: false, flags: ["noatime"] }),
      ).toEqual({
        alreadyMounted: false,
      });
      expect(
        await mountFilesystem({ device, target: staging, fsType, readOnly: false, flags: ["noatime"] }),
      ).toEqual({
        alreadyMounted: true,
      });
      expect((await findMount(staging))?.mountOptions).toContain("noatime");

      const data = pattern(3 * MiB + 17, 1);
      await fs.writeFile(path.join(staging, "data.bin"), data);

      // NodePublish read-only: the pod sees the data and cannot write.
      await fs.mkdir(path.dirname(publish), { recursive: true });
      await prepareMountTarget({ path: publish, kind: "directory" });
      expect(await bindMount({ source: staging, target: publish, readOnly: true })).toEqual({
        alreadyMounted: false,
      });
      expect(await bindMount({ source: staging, target: publish, readOnly: true })).toEqual({
        alreadyMounted: true,
      });
      await expect(bindMount({ source: staging, target: publish, readOnly: false })).rejects.toMatchObject({
        code: "ALREADY_EXISTS",
      });
      expect((await fs.readFile(path.join(publish, "data.bin"))).equals(data)).toBe(true);
      expect(await expectErrno(fs.writeFile(path.join(publish, "new.txt"), "x"))).toBe("EROFS");
      expect(await expectErrno(fs.unlink(path.join(publish, "data.bin")))).toBe("EROFS");
      // ...while the staging mount stays writable.
      await fs.writeFile(path.join(staging, "still-writable.txt"), "yes");

      const stats = await volumeStats(publish);
      expect(stats.totalBytes).toBeGreaterThan(size * 0.7);
      expect(stats.totalBytes).toBeLessThanOrEqual(size);
      expect(stats.usedBytes).toBeGreaterThanOrEqual(data.length);
      expect(stats.totalInodes).toBeGreaterThan(stats.usedInodes);
      expect((await findMountsOfDevice(device)).filesystemMounts.map((m) => m.mountPoint).sort()).toEqual(
        [publish, staging].sort(),
      );

      // Detaching under mounted filesystems is refused, and changes nothing.
      await expect(attacher.detach("pvc-1")).rejects.toMatchObject({ code: "BUSY" });
      expect((await attacher.find("pvc-1"))?.health).toBe("ok");

      // NodeUnpublish, NodeUnstage (each twice: idempotent).
      await unmount(publish, { removeTarget: true });
      await unmount(publish, { removeTarget: true });
      await expect(fs.stat(publish)).rejects.toMatchObject({ code: "ENOENT" });
      await unmount(staging);
      await unmount(staging);
      expect(await findMount(staging)).toBeUndefined();
      const check = await checkFilesystem({ device, fsType });
      expect(check.clean, check.output).toBe(true);
      const pid = attachment.pid!;
      await attacher.detach("pvc-1");
      await attacher.detach("pvc-1");

      expect(await leftoversUnder(dir)).toEqual({ mounts: [], loops: [], pids: [nbdkit.process.pid] });
      expect(await fs.readdir(stateDir)).toEqual([]);
      expect(await attacher.find("pvc-1")).toBeUndefined();
      expect(await fs.readFile(`/proc/${pid}/stat`, "utf8").catch(() => "gone")).toMatch(/^gone$|\) [ZX] /);

      // Attach again: same data, existing filesystem left alone, still clean.
      const again = await attacher.attach(request);
      expect(await ensureFilesystem({ device: again.devicePath!, fsType })).toBe("existing");
      await mountFilesystem({ device: again.devicePath!, target: staging, fsType, readOnly: true });
      expect((await fs.readFile(path.join(staging, "data.bin"))).equals(data)).toBe(true);
      expect(await fs.readFile(path.join(staging, "still-writable.txt"), "utf8")).toBe("yes");
      await unmount(staging);
      await attacher.detach("pvc-1");
      expect((await leftoversUnder(dir)).loops).toEqual([]);
    },
  );

  it("refuses to format a device holding another filesystem or a partition table", async () => {
    dir = await makeTempDir();
    nbdkit = await startNbdkit(dir, ["memory", String(64 * MiB)]);
    const attacher = new NbdfuseLoopAttacher({ stateDir: path.join(dir, "state") });
    const { devicePath } = await attacher.attach({
      key: "v",
      socketPath: nbdkit.socketPath,
      exportName: "v",
      readOnly: false,
      sizeBytes: 64 * MiB,
    });
    const device = devicePath!;
    expect(await ensureFilesystem({ device, fsType: "ext4" })).toBe("formatted");
    await expect(ensureFilesystem({ device, fsType: "xfs" })).rejects.toThrow(
      /already contains a ext4 filesystem/,
    );
    // Overwrite the first 4 KiB (MBR and the ext4 primary superblock) with a DOS partition table.
    const handle = await fs.open(device, "r+");
    const sector = Buffer.alloc(4096);
    sector[510] = 0x55;
    sector[511] = 0xaa;
    sector[446 + 4] = 0x83; // one Linux partition entry
    sector[446 + 8] = 1;
    sector[446 + 12] = 0x10;
    await handle.write(sector, 0, 4096, 0);
    await handle.sync();
    await handle.close();
    const content = await probeFilesystem(device);
    expect(content.kind).toBe("other");
    await expect(ensureFilesystem({ device, fsType: "ext4" })).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
    });
    await attacher.detach("v");
  });

  it("mounts a read-only attachment read-only", async () => {
    dir = await makeTempDir();
    nbdkit = await startNbdkit(dir, ["memory", String(64 * MiB)]);
    const attacher = new NbdfuseLoopAttacher({ stateDir: path.join(dir, "state") });
    const base = { key: "v", socketPath: nbdkit.socketPath, exportName: "v", sizeBytes: 64 * MiB };
    const rw = await attacher.attach({ ...base, readOnly: false });
    await ensureFilesystem({ device: rw.devicePath!, fsType: "ext4" });
    await expect(attacher.attach({ ...base, readOnly: true })).rejects.toMatchObject({
      code: "ALREADY_EXISTS",
    });
    await attacher.detach("v");

    const ro = await attacher.attach({ ...base, readOnly: true });
    expect(ro.readOnly).toBe(true);
    const staging = path.join(dir, "staging");
    await prepareMountTarget({ path: staging, kind: "directory" });
    await mountFilesystem({ device: ro.devicePath!, target: staging, fsType: "ext4", readOnly: true });
    expect(await expectErrno(fs.writeFile(path.join(staging, "x"), "x"))).toBe("EROFS");
    await unmount(staging);
    await attacher.detach("v");
  });
});
