/**
 * withFrozenFilesystem on real mounts (an ext4 image on a loop device) with a real writer: the
 * filesystem is frozen exactly while the operation runs and thawed after it, whether the
 * operation succeeds, fails or outlasts the hold (the watchdog thaws first), and when the freeze
 * itself outlasts its timeout (the thaw follows the late freeze). A freeze someone else holds is
 * left alone.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { isSnapblockError } from "../../pkg/errors/index.js";
import {
  findExecutable,
  runCommand,
  withFrozenFilesystem,
  type CommandRunner,
} from "../../pkg/mount/index.js";
import { startFileWriter, type FileWriter } from "../csi/file-writer.js";
import { leftoversUnder, makeTempDir, scrub, skipReason } from "./harness.js";

const skip =
  (await skipReason()) ?? ((await findExecutable("fsfreeze")) ? undefined : "missing fsfreeze (util-linux)");
if (skip !== undefined) console.warn(`skipping freeze tests: ${skip}`);

let dir = "";
let mnt = "";
let writer: FileWriter | undefined;
afterEach(async () => {
  await writer?.stop();
  writer = undefined;
  // A frozen filesystem cannot be unmounted cleanly: thaw whatever a failed test left frozen.
  if (mnt !== "") await runCommand({ command: "fsfreeze", args: ["--unfreeze", mnt], acceptExitCodes: [1] });
  if (dir !== "") await scrub(dir);
  dir = "";
  mnt = "";
});

async function mountedExt4(): Promise<string> {
  dir = await makeTempDir();
  const image = path.join(dir, "fs.img");
  await fs.writeFile(image, "");
  await fs.truncate(image, 64 * 1024 * 1024);
  await runCommand({ command: "mkfs.ext4", args: ["-q", image] });
  mnt = path.join(dir, "mnt");
  await fs.mkdir(mnt);
  await runCommand({ command: "mount", args: ["-o", "loop", image, mnt] });
  return mnt;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** True when the writer makes no progress for `ms` (it is blocked by a freeze). */
async function stalled(w: FileWriter, ms: number): Promise<boolean> {
  const before = w.acked();
  await sleep(ms);
  return w.acked() === before;
}

describe.skipIf(skip !== undefined)("scrub after a failed freeze test", () => {
  it("thaws a filesystem left frozen, then removes the mount, the loop device and the directory", async () => {
    const m = await mountedExt4();
    await fs.writeFile(path.join(m, "f"), "x");
    await runCommand({ command: "fsfreeze", args: ["--freeze", m] });
    const scrubbed = dir;
    mnt = ""; // scrub alone, not afterEach's thaw
    await scrub(scrubbed);
    dir = "";
    expect(await leftoversUnder(scrubbed)).toEqual({ mounts: [], loops: [], pids: [] });
    await expect(fs.stat(scrubbed)).rejects.toThrow(/ENOENT/);
  });
});

describe.skipIf(skip !== undefined)("withFrozenFilesystem", () => {
  it("holds the writers while the operation runs and lets them go after", async () => {
    const mountPoint = await mountedExt4();
    writer = startFileWriter(mountPoint);
    await writer.waitFor(5);
    const w = writer;
    const result = await withFrozenFilesystem({ mountPoint }, async () => {
      // fsfreeze returned: the writer must be stuck for as long as the operation takes.
      return stalled(w, 500);
    });
    expect(result.value).toBe(true);
    expect(result.frozenMs).toBeGreaterThanOrEqual(400);
    await writer.waitFor(writer.acked() + 5);
  });

  it("thaws when the operation fails, and passes its error on", async () => {
    const mountPoint = await mountedExt4();
    writer = startFileWriter(mountPoint);
    await writer.waitFor(5);
    const err = await withFrozenFilesystem({ mountPoint }, () =>
      Promise.reject(new Error("snapshot failed")),
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as Error).message).toBe("snapshot failed");
    await writer.waitFor(writer.acked() + 5);
  });

  it("thaws after holdMs while the operation still runs, then reports it as not consistent", async () => {
    const mountPoint = await mountedExt4();
    writer = startFileWriter(mountPoint);
    await writer.waitFor(5);
    const w = writer;
    let progressedWhileRunning = false;
    const err = await withFrozenFilesystem({ mountPoint, holdMs: 300 }, async () => {
      const at = w.acked();
      await w.waitFor(at + 5, 10_000); // only possible once the watchdog has thawed
      progressedWhileRunning = true;
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(progressedWhileRunning).toBe(true);
    expect(isSnapblockError(err, "CANCELLED")).toBe(true);
    expect((err as Error).message).toMatch(/thawed before the operation finished/);
  });

  it("a freeze that outlasts its timeout answers at once and is thawed when it completes", async () => {
    const mountPoint = await mountedExt4();
    writer = startFileWriter(mountPoint);
    await writer.waitFor(5);
    // The real fsfreeze, held back until the caller has had its answer: a freeze that completes
    // late, as one does when the kernel first writes a lot of dirty data.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const slowFreeze: CommandRunner = async (o) => {
      if (o.args[0] === "--freeze") await held;
      return runCommand(o);
    };
    const events: string[] = [];
    let ran = false;
    const err = await withFrozenFilesystem(
      { mountPoint, freezeTimeoutMs: 100, runner: slowFreeze, onBackgroundEvent: (m) => events.push(m) },
      async () => {
        ran = true;
        return Promise.resolve();
      },
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isSnapblockError(err, "CANCELLED")).toBe(true);
    expect(ran).toBe(false);
    // The late freeze happens, and is undone without anyone asking.
    release();
    const deadline = Date.now() + 10_000;
    while (events.length === 0 && Date.now() < deadline) await sleep(20);
    expect(events).toEqual(["thawed a filesystem whose freeze completed after its timeout"]);
    await writer.waitFor(writer.acked() + 5);
  });

  it("leaves alone a freeze someone else holds (BUSY)", async () => {
    const mountPoint = await mountedExt4();
    await runCommand({ command: "fsfreeze", args: ["--freeze", mountPoint] });
    const err = await withFrozenFilesystem({ mountPoint }, () => Promise.resolve()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isSnapblockError(err, "BUSY")).toBe(true);
    // Still frozen: thawing it succeeds (FITHAW fails on a filesystem that is not frozen).
    const thaw = await runCommand({
      command: "fsfreeze",
      args: ["--unfreeze", mountPoint],
      acceptExitCodes: [1],
    });
    expect(thaw.exitCode).toBe(0);
  });
});
