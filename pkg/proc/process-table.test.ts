import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { findProcessesWithArgument, isLive, readProcess, stopProcess } from "./process-table.js";

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await fs.rm(dir, { recursive: true, force: true });
});

describe("process table", () => {
  it("parses stat with parentheses and spaces in the command name", async () => {
    const proc = await fs.mkdtemp(path.join(os.tmpdir(), "snapblock-proc-"));
    dirs.push(proc);
    await fs.mkdir(path.join(proc, "77"));
    await fs.writeFile(path.join(proc, "77", "stat"), "77 (nbd (fuse) x) Z 1 77 77 0 -1");
    await fs.writeFile(path.join(proc, "77", "cmdline"), "nbdfuse\0-P\0/s/k.pid\0/s/k.fuse/disk\0");
    const info = await readProcess(77, { procRoot: proc });
    expect(info).toEqual({ pid: 77, state: "Z", argv: ["nbdfuse", "-P", "/s/k.pid", "/s/k.fuse/disk"] });
    expect(isLive(info)).toBe(false);
    expect(await findProcessesWithArgument("/s/k.fuse/disk", { procRoot: proc })).toEqual([]);
    expect(await readProcess(78, { procRoot: proc })).toBeUndefined();
  });

  it("finds a live process by argument and stops it, escalating to signals", async () => {
    const marker = `snapblock-test-${process.pid}-${Date.now()}`;
    // A shell that ignores SIGTERM, so that stopProcess has to escalate to SIGKILL.
    const child = spawn("sh", ["-c", "trap '' TERM; while :; do sleep 0.05; done", marker], {
      stdio: "ignore",
    });
    const pid = child.pid!;
    try {
      await expect
        .poll(async () => (await findProcessesWithArgument(marker)).map((p) => p.pid))
        .toEqual([pid]);
      await stopProcess({ pid, isOurs: (info) => info.argv.includes(marker), graceMs: 100 });
      expect(isLive(await readProcess(pid))).toBe(false);
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("never signals a process that is not ours", async () => {
    const child = spawn("sleep", ["5"], { stdio: "ignore" });
    try {
      await stopProcess({ pid: child.pid!, isOurs: () => false, graceMs: 50 });
      expect(isLive(await readProcess(child.pid!))).toBe(true);
    } finally {
      child.kill("SIGKILL");
    }
  });
});
