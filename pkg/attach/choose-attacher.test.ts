import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { CommandRunner } from "../mount/index.js";
import { chooseAttacher } from "./choose-attacher.js";
import { AttachmentStateStore } from "./state-store.js";

let dir: string;
beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "snapblock-choose-"));
  await fs.mkdir(path.join(dir, "sys", "module"), { recursive: true });
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const everything = (name: string) => Promise.resolve(`/usr/bin/${name}`);
const without =
  (...missing: string[]) =>
  (name: string) =>
    Promise.resolve(missing.includes(name) ? undefined : `/usr/bin/${name}`);
const noHelper = without("snapblock-nbd-netlink");
const noKernelNbdTools = without("nbd-client", "snapblock-nbd-netlink");

function modprobe(loads: boolean): { runner: CommandRunner; calls: string[][] } {
  const calls: string[][] = [];
  const runner: CommandRunner = async (o) => {
    calls.push([o.command, ...o.args]);
    if (loads) await fs.mkdir(path.join(dir, "sys", "module", "nbd"));
    return {
      command: o.command,
      args: o.args,
      exitCode: loads ? 0 : 1,
      stdout: "",
      stderr: loads ? "" : "modprobe: FATAL: Module nbd not found",
    };
  };
  return { runner, calls };
}

describe("chooseAttacher", () => {
  const base = () => ({ stateDir: path.join(dir, "state"), sysfsRoot: path.join(dir, "sys") });

  it("uses the kernel nbd driver when the module is loaded and nbd-client is installed", async () => {
    await fs.mkdir(path.join(dir, "sys", "module", "nbd"));
    const { runner, calls } = modprobe(true);
    const chosen = await chooseAttacher({ ...base(), runner, findProgram: noHelper });
    expect(chosen.attacher.kind).toBe("nbd-client");
    expect(chosen.reason).toMatch(
      /nbd-client is installed; connecting with nbd-client: no snapblock-nbd-netlink.*do not survive/,
    );
    expect(calls).toEqual([]);
  });

  it("connects through snapblock-nbd-netlink when it is there, with or without nbd-client", async () => {
    await fs.mkdir(path.join(dir, "sys", "module", "nbd"));
    for (const findProgram of [everything, without("nbd-client")]) {
      const chosen = await chooseAttacher({ ...base(), runner: modprobe(true).runner, findProgram });
      expect(chosen.attacher.kind).toBe("nbd-client");
      expect(chosen.reason).toBe(
        "the kernel nbd module is loaded; connecting with /usr/bin/snapblock-nbd-netlink, dead-connection timeout 120 s: devices reconnect after a data plane restart",
      );
    }
    const configured = await chooseAttacher({
      ...base(),
      runner: modprobe(true).runner,
      findProgram: everything,
      nbdClient: { deadConnTimeoutSeconds: 45 },
    });
    expect(configured.reason).toMatch(/dead-connection timeout 45 s/);
  });

  it("does not use the helper without the nbd module", async () => {
    const chosen = await chooseAttacher({
      ...base(),
      runner: modprobe(false).runner,
      findProgram: everything,
    });
    expect(chosen.attacher.kind).toBe("nbdfuse-loop");
  });

  it("loads the module with modprobe when it can", async () => {
    const { runner, calls } = modprobe(true);
    expect((await chooseAttacher({ ...base(), runner, findProgram: everything })).attacher.kind).toBe(
      "nbd-client",
    );
    expect(calls).toEqual([["modprobe", "nbd"]]);
  });

  it("falls back to nbdfuse + loop without the module, and says why", async () => {
    const chosen = await chooseAttacher({
      ...base(),
      runner: modprobe(false).runner,
      findProgram: everything,
    });
    expect(chosen.attacher.kind).toBe("nbdfuse-loop");
    expect(chosen.reason).toMatch(/Module nbd not found/);
  });

  it("falls back when neither the helper nor nbd-client is there and names the package", async () => {
    await fs.mkdir(path.join(dir, "sys", "module", "nbd"));
    const chosen = await chooseAttacher({
      ...base(),
      runner: modprobe(true).runner,
      findProgram: noKernelNbdTools,
    });
    expect(chosen.attacher.kind).toBe("nbdfuse-loop");
    expect(chosen.reason).toMatch(
      /neither snapblock-nbd-netlink nor nbd-client \(Debian package nbd-client\)/,
    );
  });

  it("keeps the kind of attachments already recorded", async () => {
    await fs.mkdir(path.join(dir, "sys", "module", "nbd"));
    await new AttachmentStateStore(path.join(dir, "state")).write({
      version: 1,
      key: "v",
      kind: "nbdfuse-loop",
      socketPath: "/s",
      exportName: "v",
      readOnly: false,
      expectedSizeBytes: 0,
      phase: "attached",
      createdAt: "2025-01-01T00:00:00Z",
      nbdfuse: { mountDir: "/m", file: "/m/disk", logPath: "/l" },
    });
    const chosen = await chooseAttacher({
      ...base(),
      runner: modprobe(true).runner,
      findProgram: everything,
    });
    expect(chosen.attacher.kind).toBe("nbdfuse-loop");
    expect(chosen.reason).toMatch(/existing attachments/);
  });

  it("fails with what is missing when neither path works", async () => {
    await expect(
      chooseAttacher({
        ...base(),
        runner: modprobe(false).runner,
        findProgram: () => Promise.resolve(undefined),
      }),
    ).rejects.toThrow(/libnbd-bin/);
  });

  it("honours an explicit choice", async () => {
    const chosen = await chooseAttacher({ ...base(), prefer: "nbd-client" });
    expect(chosen.attacher.kind).toBe("nbd-client");
  });
});
