/**
 * What the snapblock-nbd-netlink tests share: the helper built from this tree (the build step
 * itself, as `npm run build` runs it), and a volume of a real pool served by snapblock's own NBD
 * server, the server the helper talks to in the data plane.
 */
import { existsSync } from "node:fs";
import path from "node:path";
import { bundledNbdNetlinkHelper } from "../../pkg/attach/index.js";
import { Pool } from "../../pkg/engine/index.js";
import { silentLogger } from "../../pkg/log/index.js";
import { findExecutable, runCommand } from "../../pkg/mount/index.js";
import { NbdServer } from "../../pkg/nbd/index.js";

export const MiB = 1024 * 1024;
const BUILD = path.join(import.meta.dirname, "..", "..", "native", "nbd-netlink", "build.sh");

/** Builds the helper (strict: a broken build fails the test); a reason when this machine cannot. */
export async function buildHelper(): Promise<{ helper: string } | { skip: string }> {
  if ((await findExecutable(process.env.CC ?? "cc")) === undefined) {
    return { skip: "no C compiler (cc) to build native/nbd-netlink (Debian: gcc, libc6-dev)" };
  }
  if (!existsSync("/usr/include/linux/nbd-netlink.h")) {
    return { skip: "no Linux uapi headers (/usr/include/linux/nbd-netlink.h; Debian: linux-libc-dev)" };
  }
  await runCommand({ command: "sh", args: [BUILD], timeoutMs: 60_000 });
  const helper = bundledNbdNetlinkHelper();
  if (helper === undefined || !existsSync(helper)) throw new Error(`build.sh did not produce ${helper}`);
  return { helper };
}

/** Whether the running kernel has the nbd module loaded (then netlink answers for real). */
export function nbdModuleLoaded(): boolean {
  return existsSync("/sys/module/nbd");
}

export async function createTestPool(dir: string, volumes: Record<string, number>): Promise<Pool> {
  const pool = await Pool.create({ dir: path.join(dir, "pool"), sizeBytes: 64 * MiB, autoCommitMs: 0 });
  for (const [name, size] of Object.entries(volumes)) await pool.createVolume(name, size);
  return pool;
}

/** One pool volume exported on a unix socket in dir; stop() closes the server and the volume. */
export async function serveVolume(
  pool: Pool,
  name: string,
  socketPath: string,
): Promise<{ server: NbdServer; stop(): Promise<void> }> {
  const server = new NbdServer({ logger: silentLogger });
  const device = pool.openVolume(name);
  await server.startExport({ backend: device, listen: { socketPath }, name });
  return {
    server,
    stop: async () => {
      await server.shutdown();
      device.close();
    },
  };
}
