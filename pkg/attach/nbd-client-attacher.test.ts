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
import { NbdClientAttacher, planReconnect } from "./nbd-client-attacher.js";
import { freeNbdDevices, listNbdDevices, nbdClientConnectArgs } from "./nbd-devices.js";
import type { AttachmentRecord } from "./state-store.js";

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

/** The attach request every test here makes (socketPath is set per test). */
function request() {
  return { key: "vol-1", socketPath, exportName: "vol-1", readOnly: false, sizeBytes: 64 * MiB };
}

describe("NbdClientAttacher (fake sysfs)", () => {
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

const HELPER = "/opt/snapblock/snapblock-nbd-netlink";

/**
 * A fake kernel behind snapblock-nbd-netlink: connect takes the device (sysfs pid and size) and
 * records its configuration; a restart of the server kills its connections (dead); reconfigure
 * revives them; disconnect drops the configuration. Exit codes and messages as the helper's.
 */
function fakeNetlinkKernel(options: { exportBytes: number; busy?: number; failReconfigure?: string }) {
  const calls: string[][] = [];
  const configured = new Set<number>();
  const dead = new Set<number>();
  let nextPid = 700;
  const flag = (args: readonly string[], name: string) => args[args.indexOf(name) + 1];
  const runner: CommandRunner = async (o: RunCommandOptions) => {
    calls.push([o.command, ...o.args]);
    const result = (exitCode: number, stdout: string, stderr = "") => ({
      command: o.command,
      args: o.args,
      exitCode,
      stdout,
      stderr: stderr === "" ? "" : `snapblock-nbd-netlink: ${stderr}\n`,
    });
    const index = Number(flag(o.args, "--index"));
    const block = path.join(sysfs, "block", `nbd${index}`);
    switch (o.args[0] ?? "") {
      case "connect":
        if (index === options.busy) return result(4, "", `connect nbd${index}: the device is busy`);
        configured.add(index);
        await fs.writeFile(path.join(block, "pid"), `${nextPid++}\n`);
        await fs.writeFile(path.join(block, "size"), `${options.exportBytes / 512}\n`);
        return result(0, `index=${index} size=${options.exportBytes} flags=1\n`);
      case "status":
        return result(0, `index=${index} connected=${configured.has(index) ? 1 : 0}\n`);
      case "reconfigure":
        if (options.failReconfigure !== undefined) return result(5, "", options.failReconfigure);
        if (!configured.has(index)) return result(6, "", `reconfigure nbd${index}: not configured`);
        dead.delete(index);
        return result(0, `index=${index} size=${options.exportBytes}\n`);
      case "disconnect":
        configured.delete(index);
        dead.delete(index);
        await fs.rm(path.join(block, "pid"), { force: true });
        await fs.writeFile(path.join(block, "size"), "0\n");
        return result(0, `index=${index}\n`);
      default:
        throw new Error(`unexpected helper call ${o.args.join(" ")}`);
    }
  };
  /** What the kernel does when the device's server goes away: connections dead, device kept. */
  const serverRestarted = () => {
    for (const index of configured) dead.add(index);
  };
  /** What happens when someone disconnects the device (or it is torn down) meanwhile. */
  const dropConfiguration = async (index: number) => {
    configured.delete(index);
    await fs.rm(path.join(sysfs, "block", `nbd${index}`, "pid"), { force: true });
  };
  return { runner, calls, dead, configured, serverRestarted, dropConfiguration };
}

function netlinkAttacher(
  runner: CommandRunner,
  extra: { netlinkHelper?: string; deadConnTimeoutSeconds?: number } = { netlinkHelper: HELPER },
) {
  return new NbdClientAttacher({
    stateDir: path.join(dir, "state"),
    sysfsRoot: sysfs,
    devRoot: path.join(dir, "dev"),
    runner,
    deviceUsers: () => Promise.resolve([]),
    settleTimeoutMs: 500,
    ...extra,
  });
}

describe("NbdClientAttacher through snapblock-nbd-netlink (fake kernel)", () => {
  it("connects with a dead-connection timeout and records how, so that a restart can reconnect", async () => {
    const kernel = fakeNetlinkKernel({ exportBytes: 64 * MiB, busy: 0 });
    const attachment = await netlinkAttacher(kernel.runner).attach({ ...request(), readOnly: true });
    // nbd0 answers busy (another client took it meanwhile): the next free one, nbd2, is used.
    expect(attachment).toMatchObject({ devicePath: path.join(dir, "dev", "nbd2"), health: "ok", pid: 700 });
    expect(kernel.calls.map((c) => c.slice(0, 2))).toEqual([
      [HELPER, "connect"],
      [HELPER, "connect"],
    ]);
    expect(kernel.calls[1]).toEqual([
      HELPER,
      "connect",
      "--unix",
      socketPath,
      "--export",
      "vol-1",
      "--index",
      "2",
      "--block-size",
      "4096",
      "--dead-conn-timeout",
      "120",
      "--read-only",
    ]);
    const record = JSON.parse(await fs.readFile(path.join(dir, "state", "vol-1.json"), "utf8")) as {
      nbd: unknown;
    };
    expect(record.nbd).toEqual({ index: 2, via: "netlink", deadConnTimeoutSeconds: 120, kernelPid: 700 });
  });

  it("passes a configured timeout and connection count, and refuses a timeout the kernel would not take", async () => {
    const kernel = fakeNetlinkKernel({ exportBytes: 64 * MiB });
    const a = new NbdClientAttacher({
      stateDir: path.join(dir, "state"),
      sysfsRoot: sysfs,
      devRoot: path.join(dir, "dev"),
      runner: kernel.runner,
      deviceUsers: () => Promise.resolve([]),
      netlinkHelper: HELPER,
      deadConnTimeoutSeconds: 30,
      connections: 2,
    });
    await a.attach(request());
    expect(kernel.calls[0]).toEqual(
      expect.arrayContaining(["--dead-conn-timeout", "30", "--connections", "2"]),
    );
    expect(() =>
      netlinkAttacher(kernel.runner, { netlinkHelper: HELPER, deadConnTimeoutSeconds: 0 }),
    ).toThrow(/dead-connection timeout 0/);
  });

  it("after a data plane restart: reconnects the waiting device, which stays healthy and detaches", async () => {
    const kernel = fakeNetlinkKernel({ exportBytes: 64 * MiB });
    await netlinkAttacher(kernel.runner).attach(request());
    kernel.serverRestarted();
    expect(kernel.dead.has(0)).toBe(true);

    const restarted = netlinkAttacher(kernel.runner);
    expect(await restarted.reconnect("vol-1")).toMatchObject({
      reconnected: true,
      message: /nbd0 has a new connection/,
    });
    expect(kernel.calls.slice(-2)).toEqual([
      [HELPER, "status", "--index", "0"],
      [HELPER, "reconfigure", "--index", "0", "--unix", socketPath, "--export", "vol-1"],
    ]);
    expect(kernel.dead.has(0)).toBe(false);
    expect(await restarted.find("vol-1")).toMatchObject({ health: "ok", problems: [] });
    await restarted.detach("vol-1");
    expect(kernel.calls.at(-1)).toEqual([HELPER, "disconnect", "--index", "0"]);
    expect(await fs.readdir(path.join(dir, "state"))).toEqual([]);
  });

  it("reconnects, but reports broken, a device that waited longer than its dead-connection timeout", async () => {
    const kernel = fakeNetlinkKernel({ exportBytes: 64 * MiB });
    await netlinkAttacher(kernel.runner).attach(request());
    const restarted = netlinkAttacher(kernel.runner);
    expect(await restarted.reconnect("vol-1", { awayMs: 119_000 })).toMatchObject({
      reconnected: true,
      message: /new connection/,
    });
    expect((await restarted.find("vol-1"))?.health).toBe("ok");
    const result = await restarted.reconnect("vol-1", { awayMs: 300_000 });
    expect(result).toEqual({
      reconnected: true,
      message:
        "nbd0 was reconnected, but the data plane was away about 300 s, longer than its dead-connection timeout (120 s): I/O on it failed meanwhile and the filesystem on it may have recorded errors",
    });
    expect(await restarted.find("vol-1")).toMatchObject({ health: "broken", problems: [result.message] });
  });

  it("reports broken, with what to do, when the kernel dropped the device's configuration meanwhile", async () => {
    const kernel = fakeNetlinkKernel({ exportBytes: 64 * MiB });
    await netlinkAttacher(kernel.runner).attach(request());
    kernel.serverRestarted();
    kernel.configured.delete(0); // the pid file stays (a racing teardown): status is the judge
    const restarted = netlinkAttacher(kernel.runner);
    const result = await restarted.reconnect("vol-1");
    expect(result.reconnected).toBe(false);
    expect(result.message).toMatch(/no longer holds its configuration.*I\/O on it fails/);
    expect(kernel.calls.at(-1)?.[1]).toBe("status");
    const found = await restarted.find("vol-1");
    expect(found).toMatchObject({ health: "broken", problems: [result.message] });
  });

  it("reports broken when the reconnect itself fails, and a fresh attach clears it", async () => {
    const kernel = fakeNetlinkKernel({
      exportBytes: 64 * MiB,
      failReconfigure: "cannot connect to the NBD server at /x: Connection refused",
    });
    await netlinkAttacher(kernel.runner).attach(request());
    const restarted = netlinkAttacher(kernel.runner);
    const result = await restarted.reconnect("vol-1");
    expect(result).toMatchObject({
      reconnected: false,
      message: /Connection refused.*I\/O on it fails/,
    });
    expect((await restarted.find("vol-1"))?.health).toBe("broken");
    // Heal: unstage (detach) + stage (attach) gives a healthy device again.
    await restarted.detach("vol-1");
    expect((await restarted.attach(request())).health).toBe("ok");
  });

  it("leaves a device that was disconnected or taken by someone else to find(), and touches nothing", async () => {
    const kernel = fakeNetlinkKernel({ exportBytes: 64 * MiB });
    await netlinkAttacher(kernel.runner).attach(request());
    await kernel.dropConfiguration(0);
    const restarted = netlinkAttacher(kernel.runner);
    const before = kernel.calls.length;
    expect(await restarted.reconnect("vol-1")).toMatchObject({
      reconnected: false,
      message: /not connected any more/,
    });
    expect(await restarted.find("vol-1")).toMatchObject({
      health: "broken",
      problems: [/not connected any more/],
    });
    await fs.writeFile(path.join(sysfs, "block", "nbd0", "pid"), "4242\n");
    expect(await restarted.reconnect("vol-1")).toMatchObject({ message: /another connection/ });
    expect(kernel.calls).toHaveLength(before);
  });

  it("reports a device attached with nbd-client broken after a restart: it cannot reconnect", async () => {
    const legacy = fakeKernel({ exportBytes: 64 * MiB });
    await attacher(legacy.runner).attach(request());
    const kernel = fakeNetlinkKernel({ exportBytes: 64 * MiB });
    const restarted = netlinkAttacher(kernel.runner);
    const result = await restarted.reconnect("vol-1");
    expect(result).toMatchObject({
      reconnected: false,
      message: /attached with nbd-client, which cannot reconnect/,
    });
    expect(kernel.calls).toEqual([]);
    expect(await restarted.find("vol-1")).toMatchObject({ health: "broken", problems: [result.message] });
  });

  it("without the helper, a device attached through it is reported broken and cannot be detached", async () => {
    const kernel = fakeNetlinkKernel({ exportBytes: 64 * MiB });
    await netlinkAttacher(kernel.runner).attach(request());
    const withoutHelper = netlinkAttacher(kernel.runner, {});
    expect(await withoutHelper.reconnect("vol-1")).toMatchObject({ message: /cannot find/ });
    expect((await withoutHelper.find("vol-1"))?.health).toBe("broken");
    await expect(withoutHelper.detach("vol-1")).rejects.toThrow(/native\/nbd-netlink\/build\.sh/);
  });
});

describe("planReconnect", () => {
  const record = (
    nbd: AttachmentRecord["nbd"],
    phase: AttachmentRecord["phase"] = "attached",
  ): AttachmentRecord => ({
    version: 1,
    key: "v",
    kind: "nbd-client",
    socketPath: "/s",
    exportName: "v",
    readOnly: false,
    expectedSizeBytes: 0,
    phase,
    createdAt: "2025-01-01T00:00:00Z",
    ...(nbd === undefined ? {} : { nbd }),
  });
  const device = (pid?: number) => ({ index: 3, sizeBytes: 0, ...(pid === undefined ? {} : { pid }) });
  const netlink = { index: 3, via: "netlink" as const, kernelPid: 9 };

  it("reconnects only a completed netlink attachment whose device is still ours", () => {
    expect(planReconnect(record(netlink), { helperAvailable: true, device: device(9) })).toEqual({
      action: "reconnect",
    });
    expect(
      planReconnect(record({ ...netlink, kernelPid: undefined }), {
        helperAvailable: true,
        device: device(5),
      }).action,
    ).toBe("reconnect");
    expect(
      planReconnect(record(netlink, "attaching"), { helperAvailable: true, device: device(9) }).action,
    ).toBe("leave");
    expect(planReconnect(record(netlink), { helperAvailable: true, device: device() }).action).toBe("leave");
    expect(planReconnect(record(netlink), { helperAvailable: true, device: device(10) }).action).toBe(
      "leave",
    );
    expect(planReconnect(record(netlink), { helperAvailable: false, device: device(9) }).action).toBe(
      "broken",
    );
    expect(
      planReconnect(record({ index: 3, kernelPid: 9 }), { helperAvailable: true, device: device(9) }).action,
    ).toBe("broken");
  });
});
