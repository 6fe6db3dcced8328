/**
 * Volume expansion on the node (CSI NodeExpandVolume).
 *
 * 1. What the nbdfuse path does when the export grows under it: nbdfuse keeps the size it read at
 *    connect, so `losetup -c` cannot grow the loop device. This test pins that behaviour (if a
 *    future nbdfuse re-reads the size, it fails and tells us to advertise online expansion).
 * 2. What works on that path: expansion while unstaged - the next attach sees the new size and
 *    the filesystem is grown once mounted.
 * 3. growFilesystem itself, online, for ext4 and xfs, on a loop device over a plain file that is
 *    enlarged and re-read with `losetup -c` (the same kernel mechanism a growing device uses).
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { NbdfuseLoopAttacher } from "../../pkg/attach/index.js";
import {
  blockDeviceSize,
  checkFilesystem,
  ensureFilesystem,
  growFilesystem,
  mountFilesystem,
  prepareMountTarget,
  runCommand,
  unmount,
  volumeStats,
  type FilesystemType,
} from "../../pkg/mount/index.js";
import {
  MiB,
  hasCapSysResource,
  makeTempDir,
  pattern,
  scrub,
  skipReason,
  startNbdkit,
  type Nbdkit,
} from "./harness.js";

const skip = await skipReason();
if (skip !== undefined) console.warn(`skipping node-layer resize tests: ${skip}`);
const canResizeExt4Online = skip === undefined && (await hasCapSysResource());
if (skip === undefined && !canResizeExt4Online) {
  console.warn(
    "skipping online ext4 growth: this process lacks CAP_SYS_RESOURCE, which EXT4_IOC_RESIZE_FS requires",
  );
}

let dir = "";
let nbdkit: Nbdkit | undefined;
afterEach(async () => {
  if (dir !== "") await scrub(dir);
  await nbdkit?.stop();
  nbdkit = undefined;
  dir = "";
});

async function exportSize(socketPath: string): Promise<number> {
  const uri = `nbd+unix:///vol?socket=${socketPath}`;
  return Number((await runCommand({ command: "nbdinfo", args: ["--size", uri] })).stdout.trim());
}

describe.skipIf(skip !== undefined)("expansion", () => {
  it("nbdfuse + loop: a grown export reaches the device at the next attach, not online", async () => {
    // xfs, because xfs_growfs works with the capabilities every node plugin has (see ext4 below).
    const from = 320 * MiB;
    const to = 640 * MiB;
    dir = await makeTempDir();
    const image = path.join(dir, "volume.img");
    await fs.writeFile(image, "");
    await fs.truncate(image, from);
    nbdkit = await startNbdkit(dir, ["file", image]);
    const attacher = new NbdfuseLoopAttacher({ stateDir: path.join(dir, "state") });
    expect(attacher.onlineResize).toBe(false);
    const request = {
      key: "vol",
      socketPath: nbdkit.socketPath,
      exportName: "vol",
      readOnly: false,
      sizeBytes: from,
    };
    const { devicePath } = await attacher.attach(request);
    const device = devicePath!;
    await ensureFilesystem({ device, fsType: "xfs" });
    const staging = path.join(dir, "staging");
    await prepareMountTarget({ path: staging, kind: "directory" });
    await mountFilesystem({ device, target: staging, fsType: "xfs", readOnly: false });
    const before = (await volumeStats(staging)).totalBytes;
    await fs.writeFile(path.join(staging, "kept.bin"), pattern(MiB, 3));

    // The controller grows the volume: the server now exports the new size to new connections...
    await fs.truncate(image, to);
    expect(await exportSize(nbdkit.socketPath)).toBe(to);
    // ...but nbdfuse's connection keeps the old size, so the loop device cannot grow.
    expect(await attacher.refreshSize("vol")).toBe(from);
    expect(await blockDeviceSize(device)).toBe(from);

    // What works: unstage, detach, attach again (the CO does this when expansion is OFFLINE).
    await unmount(staging);
    await attacher.detach("vol");
    const again = await attacher.attach({ ...request, sizeBytes: to });
    expect(again.sizeBytes).toBe(to);
    await mountFilesystem({ device: again.devicePath!, target: staging, fsType: "xfs", readOnly: false });
    await growFilesystem({ device: again.devicePath!, mountPath: staging, fsType: "xfs" });
    const after = (await volumeStats(staging)).totalBytes;
    expect(after).toBeGreaterThan(before + (to - from) * 0.9);
    expect((await fs.readFile(path.join(staging, "kept.bin"))).equals(pattern(MiB, 3))).toBe(true);
    await unmount(staging);
    const check = await checkFilesystem({ device: again.devicePath!, fsType: "xfs" });
    expect(check.clean, check.output).toBe(true);
    await attacher.detach("vol");
  });

  it("xfs grows online on a loop device whose backing file grew", async () => {
    await growOnline("xfs", 320 * MiB, 448 * MiB);
  });

  it.skipIf(!canResizeExt4Online)("ext4 grows online on a loop device whose backing file grew", async () => {
    await growOnline("ext4", 64 * MiB, 192 * MiB);
  });

  it.skipIf(canResizeExt4Online || skip !== undefined)(
    "ext4 online growth without CAP_SYS_RESOURCE fails saying so",
    async () => {
      await expect(growOnline("ext4", 64 * MiB, 192 * MiB)).rejects.toThrow(/needs CAP_SYS_RESOURCE/);
    },
  );

  it("refuses to grow a filesystem that is not mounted where it is said to be", async () => {
    dir = await makeTempDir();
    const image = path.join(dir, "plain.img");
    await fs.writeFile(image, "");
    await fs.truncate(image, 32 * MiB);
    const device = (
      await runCommand({ command: "losetup", args: ["--find", "--show", "--", image] })
    ).stdout.trim();
    await expect(growFilesystem({ device, mountPath: dir, fsType: "ext4" })).rejects.toThrow(
      /not mounted at/,
    );
    await runCommand({ command: "losetup", args: ["-d", device] });
  });
});

async function growOnline(fsType: FilesystemType, from: number, to: number): Promise<void> {
  dir = await makeTempDir();
  const image = path.join(dir, "plain.img");
  await fs.writeFile(image, "");
  await fs.truncate(image, from);
  const device = (
    await runCommand({ command: "losetup", args: ["--find", "--show", "--", image] })
  ).stdout.trim();
  const mountPath = path.join(dir, "mnt");
  await prepareMountTarget({ path: mountPath, kind: "directory" });
  await ensureFilesystem({ device, fsType });
  await mountFilesystem({ device, target: mountPath, fsType, readOnly: false });
  const before = await volumeStats(mountPath);
  await fs.writeFile(path.join(mountPath, "a.bin"), pattern(2 * MiB, 5));

  await fs.truncate(image, to);
  await runCommand({ command: "losetup", args: ["-c", device] });
  expect(await blockDeviceSize(device)).toBe(to);
  await growFilesystem({ device, mountPath, fsType });
  await growFilesystem({ device, mountPath, fsType }); // already full size: a no-op, not an error

  const after = await volumeStats(mountPath);
  expect(after.totalBytes).toBeGreaterThan(before.totalBytes + (to - from) * 0.9);
  // More is free now than the whole filesystem held before: the new space is usable.
  expect(after.availableBytes).toBeGreaterThan(before.totalBytes);
  await fs.writeFile(path.join(mountPath, "b.bin"), Buffer.alloc(16 * MiB, 0xab));
  expect((await fs.readFile(path.join(mountPath, "a.bin"))).equals(pattern(2 * MiB, 5))).toBe(true);
  await unmount(mountPath);
  const check = await checkFilesystem({ device, fsType });
  expect(check.clean, check.output).toBe(true);
  await runCommand({ command: "losetup", args: ["-d", device] });
}
