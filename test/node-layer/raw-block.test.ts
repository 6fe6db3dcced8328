/**
 * Raw block volumes (CSI VolumeCapability.block): the device node is bind-mounted onto a file at
 * the pod's target path, and what the pod writes there lands on the export.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { NbdfuseLoopAttacher } from "../../pkg/attach/index.js";
import {
  bindMount,
  blockDeviceSize,
  findMountsOfDevice,
  prepareMountTarget,
  unmount,
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
if (skip !== undefined) console.warn(`skipping node-layer raw block tests: ${skip}`);

let dir = "";
let nbdkit: Nbdkit | undefined;
afterEach(async () => {
  if (dir !== "") await scrub(dir);
  await nbdkit?.stop();
  nbdkit = undefined;
  dir = "";
});

const SIZE = 64 * MiB;

describe.skipIf(skip !== undefined)("raw block volume through nbdfuse + loop", () => {
  it("publishes the device node onto a file; writes there reach the export", async () => {
    dir = await makeTempDir();
    nbdkit = await startNbdkit(dir, ["memory", String(SIZE)]);
    const attacher = new NbdfuseLoopAttacher({ stateDir: path.join(dir, "state") });
    const request = {
      key: "blk",
      socketPath: nbdkit.socketPath,
      exportName: "blk",
      readOnly: false,
      sizeBytes: SIZE,
    };
    const { devicePath } = await attacher.attach(request);
    const device = devicePath!;

    const target = path.join(dir, "pods", "p1", "volumeDevices", "blk");
    await fs.mkdir(path.dirname(target), { recursive: true });
    await prepareMountTarget({ path: target, kind: "file" });
    expect(await bindMount({ source: device, target, readOnly: false })).toEqual({ alreadyMounted: false });
    expect(await bindMount({ source: device, target, readOnly: false })).toEqual({ alreadyMounted: true });
    expect((await fs.stat(target)).isBlockDevice()).toBe(true);
    expect(await blockDeviceSize(target)).toBe(SIZE);
    expect((await findMountsOfDevice(device)).nodeBindMounts.map((m) => m.mountPoint)).toEqual([target]);

    // The pod writes through its target; the data is on the device (and so on the export).
    const data = pattern(1 * MiB, 7);
    const offset = 5 * MiB;
    const handle = await fs.open(target, "r+");
    await handle.write(data, 0, data.length, offset);
    await handle.sync();
    await handle.close();

    // The bind mount of the node counts as a user of the device.
    await expect(attacher.detach("blk")).rejects.toMatchObject({ code: "BUSY" });

    await unmount(target, { removeTarget: true });
    await expect(fs.stat(target)).rejects.toMatchObject({ code: "ENOENT" });
    await attacher.detach("blk");
    expect(await leftoversUnder(dir)).toMatchObject({ mounts: [], loops: [] });

    // Attach again and read what the pod wrote, from the export.
    const again = await attacher.attach(request);
    const reread = await fs.open(again.devicePath!, "r");
    const back = Buffer.alloc(data.length);
    await reread.read(back, 0, back.length, offset);
    await reread.close();
    expect(back.equals(data)).toBe(true);
    await attacher.detach("blk");
  });

  it("a read-only raw block volume rejects writes at the device, not only at the mount", async () => {
    dir = await makeTempDir();
    nbdkit = await startNbdkit(dir, ["memory", String(SIZE)]);
    const attacher = new NbdfuseLoopAttacher({ stateDir: path.join(dir, "state") });
    const { devicePath } = await attacher.attach({
      key: "blk",
      socketPath: nbdkit.socketPath,
      exportName: "blk",
      readOnly: true,
      sizeBytes: SIZE,
    });
    const target = path.join(dir, "blk");
    await prepareMountTarget({ path: target, kind: "file" });
    await bindMount({ source: devicePath!, target, readOnly: true });
    // A read-only mount does not stop writes to a device node (MNT_READONLY guards the files of a
    // filesystem, not what a device open leads to), which is why a read-only block volume is a
    // read-only device: opening it for writing works, every write fails.
    const handle = await fs.open(target, "r+");
    try {
      expect(await expectErrno(handle.write(Buffer.alloc(4096), 0, 4096, 0))).toMatch(
        /^(EPERM|EROFS|EACCES)$/,
      );
    } finally {
      await handle.close();
    }
    await unmount(target, { removeTarget: true });
    await attacher.detach("blk");
  });
});
