/**
 * The kernel nbd path cannot run here (no nbd module in CI), so this drives NbdClientAttacher
 * against a fake sysfs tree and a fake nbd-client that plays the kernel's part: connecting writes
 * /sys/block/nbdN/pid and size, disconnecting removes them.
 */
import { promises as fs } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CommandFailedError, type CommandRunner, type RunCommandOptions } from "../mount/index.js";
import { NbdClientAttacher } from "./nbd-client-attacher.js";
import { freeNbdDevices, listNbdDevices, nbdClientConnectArgs } from "./nbd-devices.js";

const MiB = 1024 * 1024;
let dir: string;
let sysfs: string;
let socketPath: string;
let server: net.Server;

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "snapblock-nbdclient-"));
  sysfs = path.join(dir, "sys");
  for (let i = 0; i < 4; i++) {
    await fs.mkdir(path.join(sysfs, "block", `nbd${i}`), { recursive: true });
    await fs.writeFile(path.join(sysfs, "block", `nbd${i}`, "size"), "0\n");
  }
  await fs.mkdir(path.join(sysfs, "block", "loop0"), { recursive: true });
  // nbd1 is already in use by someone else.
  await fs.writeFile(path.join(sysfs, "block", "nbd1", "pid"), "999\n");
  socketPath = path.join(dir, "nbd.sock");
  server = net.createServer();
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
});

afterEach(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await fs.rm(dir, { recursive: true, force: true });
});

/** A fake nbd-client: records calls and edits the fake sysfs as the kernel would. */
function fakeKernel(options: { exportBytes: number; stealFirst?: boolean }) {
  const calls: string[][] = [];
  let nextPid = 500;
  let stolen = false;
  const runner: CommandRunner = async (o: RunCommandOptions) => {
    calls.push([o.command, ...o.args]);
    const ok = { command: o.command, args: o.args, exitCode: 0, stdout: "", stderr: "" };
    const device = o.args[0] === "-d" ? o.args[1]! : o.args[4]!;
    const block = path.join(sysfs, "block", path.basename(device));
    if (o.args[0] === "-d") {
      await fs.rm(path.join(block, "pid"), { force: true });
      await fs.writeFile(path.join(block, "size"), "0\n");
      return ok;
    }
    if (options.stealFirst === true && !stolen) {
      // Another process connects this device between our look at sysfs and our connect.
      stolen = true;
      await fs.writeFile(path.join(block, "pid"), "777\n");
      throw new CommandFailedError("IO", { ...ok, exitCode: 1, stderr: "Error: Device or resource busy" });
    }
    await fs.writeFile(path.join(block, "pid"), `${nextPid++}\n`);
    await fs.writeFile(path.join(block, "size"), `${options.exportBytes / 512}\n`);
    return ok;
  };
  return { runner, calls };
}

function attacher(runner: CommandRunner, inUse: string[] = []) {
  return new NbdClientAttacher({
    stateDir: path.join(dir, "state"),
    sysfsRoot: sysfs,
    devRoot: path.join(dir, "dev"),
    runner,
    deviceUsers: () => Promise.resolve(inUse),
    settleTimeoutMs: 500,
  });
}

describe("nbd device selection", () => {
  it("lists nbd devices in numeric order and picks those without a pid", async () => {
    await fs.mkdir(path.join(sysfs, "block", "nbd10"));
    const devices = await listNbdDevices(sysfs);
    expect(devices.map((d) => d.index)).toEqual([0, 1, 2, 3, 10]);
    expect(devices[1]).toEqual({ index: 1, pid: 999, sizeBytes: 0 });
    expect(freeNbdDevices(devices)).toEqual([0, 2, 3, 10]);
  });

  it("builds the nbd-client command line", () => {
    expect(
      nbdClientConnectArgs({
        socketPath: "/run/v.sock",
        exportName: "vol-1",
        devicePath: "/dev/nbd3",
        blockSize: 4096,
        readOnly: true,
        connections: 4,
        timeoutSeconds: 60,
      }),
    ).toEqual([
      "-unix",
      "/run/v.sock",
      "-N",
      "vol-1",
      "/dev/nbd3",
      "-b",
      "4096",
      "-readonly",
      "-C",
      "4",
      "-t",
      "60",
    ]);
  });
});

describe("NbdClientAttacher (fake sysfs)", () => {
  const request = () => ({
    key: "vol-1",
    socketPath,
    exportName: "vol-1",
    readOnly: false,
    sizeBytes: 64 * MiB,
  });

  it("connects the first free device, records it, and is idempotent", async () => {
    const kernel = fakeKernel({ exportBytes: 64 * MiB });
    const a = attacher(kernel.runner);
    const attachment = await a.attach(request());
    expect(attachment).toMatchObject({
      kind: "nbd-client",
      devicePath: path.join(dir, "dev", "nbd0"),
      sizeBytes: 64 * MiB,
      health: "ok",
      pid: 500,
    });
    expect(kernel.calls).toEqual([
      ["nbd-client", "-unix", socketPath, "-N", "vol-1", path.join(dir, "dev", "nbd0"), "-b", "4096"],
    ]);
    expect(await a.attach(request())).toEqual(attachment);
    expect(kernel.calls).toHaveLength(1);
    await expect(a.attach({ ...request(), exportName: "other" })).rejects.toMatchObject({
      code: "ALREADY_EXISTS",
    });

    // Second volume skips nbd0 (ours) and nbd1 (someone else's).
    const second = await a.attach({ ...request(), key: "vol-2", readOnly: true });
    expect(second.devicePath).toBe(path.join(dir, "dev", "nbd2"));
    expect(kernel.calls[1]).toContain("-readonly");
    expect((await a.list()).map((x) => x.key)).toEqual(["vol-1", "vol-2"]);
  });

  it("survives a restart: a new attacher over the same state finds and detaches", async () => {
    const kernel = fakeKernel({ exportBytes: 64 * MiB });
    await attacher(kernel.runner).attach(request());
    const restarted = attacher(kernel.runner);
    expect(await restarted.find("vol-1")).toMatchObject({
      health: "ok",
      devicePath: path.join(dir, "dev", "nbd0"),
    });
    await restarted.detach("vol-1");
    expect(kernel.calls.at(-1)).toEqual(["nbd-client", "-d", path.join(dir, "dev", "nbd0")]);
    expect(await restarted.find("vol-1")).toBeUndefined();
    expect(await fs.readdir(path.join(dir, "state"))).toEqual([]);
    await restarted.detach("vol-1");
    expect(kernel.calls).toHaveLength(2);
  });

  it("moves on to the next device when another client takes the chosen one", async () => {
    const kernel = fakeKernel({ exportBytes: 64 * MiB, stealFirst: true });
    const attachment = await attacher(kernel.runner).attach(request());
    expect(attachment.devicePath).toBe(path.join(dir, "dev", "nbd2"));
  });

  it("refuses to detach a device that is still mounted", async () => {
    const kernel = fakeKernel({ exportBytes: 64 * MiB });
    await attacher(kernel.runner).attach(request());
    await expect(
      attacher(kernel.runner, ["ext4 filesystem mounted at /staging"]).detach("vol-1"),
    ).rejects.toMatchObject({
      code: "BUSY",
    });
    expect(kernel.calls).toHaveLength(1);
  });

  it("reports a connection the kernel dropped, and never disconnects a device that is someone else's now", async () => {
    const kernel = fakeKernel({ exportBytes: 64 * MiB });
    const a = attacher(kernel.runner);
    await a.attach(request());
    await fs.writeFile(path.join(sysfs, "block", "nbd0", "pid"), "12345\n");
    expect(await a.find("vol-1")).toMatchObject({
      health: "broken",
      problems: [expect.stringMatching(/another connection/)],
    });
    await a.detach("vol-1");
    expect(kernel.calls).toHaveLength(1);
    expect(await fs.readFile(path.join(sysfs, "block", "nbd0", "pid"), "utf8")).toBe("12345\n");
  });

  it("fails and cleans up when the export is smaller than the volume", async () => {
    const kernel = fakeKernel({ exportBytes: 32 * MiB });
    await expect(attacher(kernel.runner).attach(request())).rejects.toMatchObject({ code: "OUT_OF_RANGE" });
    expect(kernel.calls.at(-1)).toEqual(["nbd-client", "-d", path.join(dir, "dev", "nbd0")]);
    expect(await fs.readdir(path.join(dir, "state"))).toEqual([]);
  });

  it("says when every device is taken", async () => {
    for (const i of [0, 2, 3]) await fs.writeFile(path.join(sysfs, "block", `nbd${i}`, "pid"), "1\n");
    await expect(attacher(fakeKernel({ exportBytes: MiB }).runner).attach(request())).rejects.toThrow(
      /nbds_max/,
    );
  });

  it("checks the socket before connecting", async () => {
    const kernel = fakeKernel({ exportBytes: MiB });
    await expect(
      attacher(kernel.runner).attach({ ...request(), socketPath: path.join(dir, "missing.sock") }),
    ).rejects.toMatchObject({
      code: "NOT_FOUND",
    });
    expect(kernel.calls).toEqual([]);
  });
});
