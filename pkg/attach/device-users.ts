/**
 * Is anyone still using a block device we are about to take away? Detaching a device under a
 * mounted filesystem would turn every later write into an I/O error (and LOOP_CLR_FD on a busy
 * loop device "succeeds" by deferring the detach, which would hide the problem), so detach asks
 * first and answers BUSY.
 *
 * Three views, because each sees what the others miss:
 * - our mount table: filesystems on the device and bind mounts of the device node (raw block);
 * - an O_EXCL open, which fails with EBUSY while the kernel has the device claimed, including by
 *   a mount in another mount namespace (kubelet's, on the host) that our mount table does not show;
 * - sysfs holders (device-mapper, md) stacked on the device.
 */
import { constants as fsConstants, promises as fs } from "node:fs";
import path from "node:path";
import { SnapblockError } from "../errors/index.js";
import { blockDeviceNumber, findMountsOfDevice, type MountInfoOptions } from "../mount/index.js";

/** Returns one description per user; empty when the device is free. */
export type DeviceUsersCheck = (devicePath: string) => Promise<string[]>;

export function deviceUsersCheck(options: MountInfoOptions & { sysfsRoot?: string } = {}): DeviceUsersCheck {
  return async (devicePath) => {
    const users: string[] = [];
    const mounts = await findMountsOfDevice(devicePath, options);
    for (const m of mounts.filesystemMounts) users.push(`${m.fsType} filesystem mounted at ${m.mountPoint}`);
    for (const m of mounts.nodeBindMounts) users.push(`device node bind-mounted at ${m.mountPoint}`);
    const { major, minor } = await blockDeviceNumber(devicePath);
    const holdersDir = path.join(options.sysfsRoot ?? "/sys", "dev", "block", `${major}:${minor}`, "holders");
    const holders = await fs.readdir(holdersDir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return [];
      throw new SnapblockError("IO", `could not read ${holdersDir}: ${err.message}`, { cause: err });
    });
    for (const holder of holders) users.push(`held by ${holder}`);
    if (users.length === 0 && (await claimedExclusively(devicePath))) {
      users.push("claimed by the kernel (mounted in another mount namespace, or in use by another driver)");
    }
    return users;
  };
}

async function claimedExclusively(devicePath: string): Promise<boolean> {
  try {
    const handle = await fs.open(devicePath, fsConstants.O_RDONLY | fsConstants.O_EXCL);
    await handle.close();
    return false;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EBUSY") return true;
    throw new SnapblockError(
      "IO",
      `could not open ${devicePath} to check whether it is in use: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
}
