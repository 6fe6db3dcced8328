/**
 * A data plane restart with kernel nbd devices attached through snapblock-nbd-netlink, as far as
 * a kernel without the nbd module allows: the data plane's own code (LocalDataPlane: re-export,
 * reconnect, report), a real pool, snapblock's NBD server, and the real helper doing the NBD
 * handshake with the restarted server. Only the kernel is played by the test - sysfs
 * (/sys/block/nbdN/pid, size) and the answers to the netlink commands - because this kernel has
 * no nbd module; docs/node-attach.md, "Restarts", says what that leaves untested.
 */
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { NbdClientAttacher } from "../../pkg/attach/index.js";
import type { Pool } from "../../pkg/engine/index.js";
import { createLogger } from "../../pkg/log/index.js";
import { runCommand, type CommandRunner } from "../../pkg/mount/index.js";
import { NbdServer } from "../../pkg/nbd/index.js";
import { LocalDataPlane } from "../../pkg/node/index.js";
import { MiB, buildHelper, createTestPool } from "./nbd-netlink-fixtures.js";

const built = await buildHelper();
if ("skip" in built) console.warn(`skipping kernel nbd restart tests: ${built.skip}`);

let dir: string;
let sysfs: string;
let pool: Pool;
const running: Array<{ nbd: NbdServer; dataPlane: LocalDataPlane }> = [];

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "snapblock-knbd-"));
  sysfs = path.join(dir, "sys");
  for (let i = 0; i < 2; i++) {
    await fs.mkdir(path.join(sysfs, "block", `nbd${i}`), { recursive: true });
    await fs.writeFile(path.join(sysfs, "block", `nbd${i}`, "size"), "0\n");
  }
  pool = await createTestPool(dir, { "vol-a": 16 * MiB });
});

afterEach(async () => {
  for (const { nbd, dataPlane } of running.splice(0)) {
    await nbd.shutdown();
    await dataPlane.close();
  }
  await pool.close();
  await fs.rm(dir, { recursive: true, force: true });
});

/**
 * The kernel's side of the helper's commands. connect and reconfigure first run the real
 * helper's handshake against the socket and export they were given - exactly what the helper
 * does before its netlink call - so a reconnect to an export that is not served fails here as it
 * would on a node.
 */
function playedKernel(helper: string) {
  const calls: string[][] = [];
  const configured = new Set<number>();
  const runner: CommandRunner = async (o) => {
    const args = o.args;
    calls.push([...args]);
    const value = (name: string) => args[args.indexOf(name) + 1] ?? "";
    const index = Number(value("--index"));
    const answer = (exitCode: number, stdout: string, stderr = "") => ({ ...o, exitCode, stdout, stderr });
    if (args[0] === "connect" || args[0] === "reconfigure") {
      const handshake = await runCommand({
        command: helper,
        args: ["handshake", "--unix", value("--unix"), "--export", value("--export")],
        acceptExitCodes: [5],
      });
      if (handshake.exitCode !== 0) return answer(handshake.exitCode, "", handshake.stderr);
      const size = Number(/size=(\d+)/.exec(handshake.stdout)?.[1]);
      if (args[0] === "reconfigure") {
        return configured.has(index)
          ? answer(0, `index=${index} size=${size}\n`)
          : answer(6, "", `snapblock-nbd-netlink: reconfigure nbd${index}: the device is not configured\n`);
      }
      configured.add(index);
      await fs.writeFile(path.join(sysfs, "block", `nbd${index}`, "pid"), "4321\n");
      await fs.writeFile(path.join(sysfs, "block", `nbd${index}`, "size"), `${size / 512}\n`);
      return answer(0, `index=${index} size=${size} flags=1\n`);
    }
    if (args[0] === "status") return answer(0, `index=${index} connected=${configured.has(index) ? 1 : 0}\n`);
    throw new Error(`the played kernel does not expect ${args.join(" ")}`);
  };
  return { runner, calls, configured };
}

/** One data plane process's worth: its NBD server, its attacher, its LocalDataPlane. */
function startDataPlane(helper: string, runner: CommandRunner, log: string[]): LocalDataPlane {
  const nbd = new NbdServer({ logger: createLogger({ level: "warn", write: () => undefined }) });
  const attacher = new NbdClientAttacher({
    stateDir: path.join(dir, "attach"),
    sysfsRoot: sysfs,
    devRoot: path.join(dir, "dev"),
    runner,
    netlinkHelper: helper,
    deviceUsers: () => Promise.resolve([]),
    settleTimeoutMs: 1000,
  });
  const dataPlane = new LocalDataPlane({
    pool: {
      nodeId: "node-a",
      isReady: () => true,
      openVolumeDevice: (name) => pool.openVolume(name),
      getVolume: () => Promise.resolve(undefined),
      updateVolumeMeta: () => Promise.resolve(),
    },
    nbd,
    attacher,
    socketDir: path.join(dir, "nbd"),
    logger: createLogger({ level: "info", write: (line) => void log.push(line) }),
  });
  running.push({ nbd, dataPlane });
  return dataPlane;
}

/** The first data plane dies: its NBD server (and with it every connection) is gone. */
async function killFirst(): Promise<void> {
  const first = running.shift()!;
  await first.nbd.shutdown();
  await first.dataPlane.close();
}

describe.skipIf("skip" in built)("data plane restart with kernel nbd (played kernel)", () => {
  const helper = () => ("helper" in built ? built.helper : "");

  it("re-exports the volume, then reconnects its device: healthy everywhere, nothing to heal", async () => {
    const kernel = playedKernel(helper());
    const log: string[] = [];
    const first = startDataPlane(helper(), kernel.runner, log);
    await first.watchHealth(60_000); // its first look writes the heartbeat
    const attached = await first.attach({ engineName: "vol-a", label: "pvc-a" });
    expect(attached).toMatchObject({ health: "ok", devicePath: path.join(dir, "dev", "nbd0") });
    const socketPath = kernel.calls[0]![kernel.calls[0]!.indexOf("--unix") + 1];
    expect(kernel.calls[0]).toEqual(expect.arrayContaining(["connect", "--dead-conn-timeout", "120"]));
    await killFirst();

    const second = startDataPlane(helper(), kernel.runner, log);
    await second.resume();
    expect(kernel.calls.slice(1)).toEqual([
      ["status", "--index", "0"],
      ["reconfigure", "--index", "0", "--unix", socketPath, "--export", "vol-a"],
    ]);
    expect(log.join("")).toMatch(/reconnected a staged volume's kernel nbd device after restart/);
    expect(log.join("")).not.toMatch(/broken/);
    expect(second.attachmentProblem("vol-a")).toBeUndefined();
    // (attachments() would also list the device's mounts, which needs a real device node.)
    expect(await second.find("vol-a")).toMatchObject({ health: "ok", problems: [] });
  });

  it("reconnects but reports broken when the data plane was away longer than the dead-connection timeout", async () => {
    const kernel = playedKernel(helper());
    const log: string[] = [];
    const first = startDataPlane(helper(), kernel.runner, log);
    await first.watchHealth(60_000);
    await first.attach({ engineName: "vol-a", label: "pvc-a" });
    await killFirst();
    // Its last heartbeat was 5 minutes ago: the kernel failed I/O on nbd0 after 120 s of waiting.
    const then = new Date(Date.now() - 300_000);
    await fs.utimes(path.join(dir, "nbd", "dataplane.alive"), then, then);

    const second = startDataPlane(helper(), kernel.runner, log);
    await second.resume();
    expect(kernel.calls.at(-1)?.[0]).toBe("reconfigure");
    expect(second.attachmentProblem("vol-a")).toMatch(
      /^nbd0 was reconnected, but the data plane was away about 30\d s, longer than its dead-connection timeout \(120 s\)/,
    );
  });

  it("reports broken, with what to do, when the kernel let go of the device meanwhile", async () => {
    const kernel = playedKernel(helper());
    const log: string[] = [];
    await startDataPlane(helper(), kernel.runner, log).attach({ engineName: "vol-a", label: "pvc-a" });
    await killFirst();
    kernel.configured.clear();

    const second = startDataPlane(helper(), kernel.runner, log);
    await second.resume();
    expect(kernel.calls.at(-1)).toEqual(["status", "--index", "0"]);
    const problem = second.attachmentProblem("vol-a");
    expect(problem).toMatch(
      /nbd0 could not be reconnected .* no longer holds its configuration.*I\/O on it fails/,
    );
    expect(await second.attachments()).toMatchObject([{ health: "broken", problems: [problem] }]);
    expect(log.join("")).toMatch(/block device is broken after the restart: unstage and stage it again/);
  });

  it("reports broken when the export cannot be served again, without touching the device", async () => {
    const kernel = playedKernel(helper());
    const log: string[] = [];
    await startDataPlane(helper(), kernel.runner, log).attach({ engineName: "vol-a", label: "pvc-a" });
    await killFirst();
    await pool.deleteVolume("vol-a").catch(() => undefined);
    const callsBefore = kernel.calls.length;

    const second = startDataPlane(helper(), kernel.runner, log);
    await second.resume();
    // No export, no reconnect: the volume cannot be opened, and the data plane says so.
    expect(kernel.calls.length).toBe(callsBefore);
    expect(log.join("")).toMatch(/cannot re-export a staged volume/);
  });
});
