/**
 * Restart survival: the node plugin process ends (here: a child process that attached a volume
 * and exited) and a new one, over the same state directory, finds the attachment, uses it and
 * detaches it. Also: attachments broken by a crash (nbdfuse killed, an interrupted attach, a lost
 * record) are reported and cleaned up.
 */
import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { NbdfuseLoopAttacher, type Attachment } from "../../pkg/attach/index.js";
import { ensureFilesystem, mountFilesystem, prepareMountTarget, unmount } from "../../pkg/mount/index.js";
import { MiB, leftoversUnder, makeTempDir, scrub, skipReason, startNbdkit, type Nbdkit } from "./harness.js";

const skip = await skipReason();
if (skip !== undefined) console.warn(`skipping node-layer restart tests: ${skip}`);

const SIZE = 64 * MiB;
const child = fileURLToPath(new URL("./attach-child.ts", import.meta.url));

let dir = "";
let nbdkit: Nbdkit | undefined;
afterEach(async () => {
  if (dir !== "") await scrub(dir);
  await nbdkit?.stop();
  nbdkit = undefined;
  dir = "";
});

function attachInChildProcess(stateDir: string, socketPath: string, key: string): Promise<Attachment> {
  return new Promise((resolve, reject) => {
    const proc = spawn(
      process.execPath,
      ["--import", "tsx", child, stateDir, socketPath, key, String(SIZE)],
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let out = "";
    let err = "";
    proc.stdout.on("data", (d: Buffer) => (out += d.toString()));
    proc.stderr.on("data", (d: Buffer) => (err += d.toString()));
    proc.once("error", reject);
    proc.once("close", (code) => {
      if (code === 0) resolve(JSON.parse(out) as Attachment);
      else reject(new Error(`attach child exited ${code}: ${err}`));
    });
  });
}

async function isLive(pid: number): Promise<boolean> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return stat !== "" && !/^[ZX]/.test(stat.slice(stat.lastIndexOf(")") + 2));
}

describe.skipIf(skip !== undefined)("restart survival", () => {
  it("a new attacher finds what an exited process attached, uses it, and detaches it", async () => {
    dir = await makeTempDir();
    nbdkit = await startNbdkit(dir, ["memory", String(SIZE)]);
    const stateDir = path.join(dir, "state");
    const attached = await attachInChildProcess(stateDir, nbdkit.socketPath, "vol-r");
    // The process that attached is gone; nbdfuse (its own session) is not.
    expect(await isLive(attached.pid!)).toBe(true);

    const restarted = new NbdfuseLoopAttacher({ stateDir });
    const found = await restarted.find("vol-r", { probeIo: true });
    expect(found).toMatchObject({
      health: "ok",
      devicePath: attached.devicePath,
      pid: attached.pid,
      sizeBytes: SIZE,
    });
    expect((await restarted.list()).map((a) => a.key)).toEqual(["vol-r"]);
    // Attaching again after the restart is the idempotent no-op.
    expect(
      await restarted.attach({
        key: "vol-r",
        socketPath: nbdkit.socketPath,
        exportName: "vol-r",
        readOnly: false,
        sizeBytes: SIZE,
      }),
    ).toMatchObject({ devicePath: attached.devicePath, pid: attached.pid });

    // The device works for the new process.
    const staging = path.join(dir, "staging");
    await ensureFilesystem({ device: found!.devicePath!, fsType: "ext4" });
    await prepareMountTarget({ path: staging, kind: "directory" });
    await mountFilesystem({ device: found!.devicePath!, target: staging, fsType: "ext4", readOnly: false });
    await fs.writeFile(path.join(staging, "after-restart.txt"), "ok");
    await unmount(staging);

    await restarted.detach("vol-r");
    expect(await isLive(attached.pid!)).toBe(false);
    expect(await leftoversUnder(dir)).toEqual({ mounts: [], loops: [], pids: [nbdkit.process.pid] });
    expect(await fs.readdir(stateDir)).toEqual([]);
  });

  it("reports a killed nbdfuse as broken, and attach replaces it once nothing is mounted", async () => {
    dir = await makeTempDir();
    nbdkit = await startNbdkit(dir, ["memory", String(SIZE)]);
    const stateDir = path.join(dir, "state");
    const attacher = new NbdfuseLoopAttacher({ stateDir });
    const request = {
      key: "vol-k",
      socketPath: nbdkit.socketPath,
      exportName: "vol-k",
      readOnly: false,
      sizeBytes: SIZE,
    };
    const first = await attacher.attach(request);
    process.kill(first.pid!, "SIGKILL");
    await expect.poll(() => isLive(first.pid!)).toBe(false);

    const broken = await attacher.find("vol-k");
    expect(broken?.health).toBe("broken");
    expect(broken?.problems.join("; ")).toMatch(/nbdfuse \(pid \d+\) is not running/);

    const second = await attacher.attach(request);
    expect(second.health).toBe("ok");
    expect(second.pid).not.toBe(first.pid);
    expect((await leftoversUnder(dir)).loops).toHaveLength(1);
    await attacher.detach("vol-k");
    expect(await leftoversUnder(dir)).toEqual({ mounts: [], loops: [], pids: [nbdkit.process.pid] });
  });

  it("notices a dead NBD connection only with an I/O probe", async () => {
    dir = await makeTempDir();
    nbdkit = await startNbdkit(dir, ["memory", String(SIZE)]);
    const attacher = new NbdfuseLoopAttacher({ stateDir: path.join(dir, "state") });
    await attacher.attach({
      key: "vol-d",
      socketPath: nbdkit.socketPath,
      exportName: "vol-d",
      readOnly: false,
      sizeBytes: SIZE,
    });
    await nbdkit.crash();
    expect((await attacher.find("vol-d"))?.health).toBe("ok");
    const probed = await attacher.find("vol-d", { probeIo: true });
    expect(probed?.health).toBe("broken");
    expect(probed?.problems.join("; ")).toMatch(/read through nbdfuse failed/);
    await attacher.detach("vol-d");
    expect(await leftoversUnder(dir)).toMatchObject({ mounts: [], loops: [] });
  });

  it("detach cleans up after a lost record and after an interrupted attach", async () => {
    dir = await makeTempDir();
    nbdkit = await startNbdkit(dir, ["memory", String(SIZE)]);
    const stateDir = path.join(dir, "state");
    const attacher = new NbdfuseLoopAttacher({ stateDir });
    const request = {
      key: "vol-l",
      socketPath: nbdkit.socketPath,
      exportName: "vol-l",
      readOnly: false,
      sizeBytes: SIZE,
    };

    // Record lost after everything was made: everything is still found by its name.
    const made = await attacher.attach(request);
    await fs.rm(path.join(stateDir, "vol-l.json"));
    expect(await attacher.find("vol-l")).toBeUndefined();
    await attacher.detach("vol-l");
    expect(await isLive(made.pid!)).toBe(false);
    expect(await leftoversUnder(dir)).toEqual({ mounts: [], loops: [], pids: [nbdkit.process.pid] });

    // A record that never got past "attaching", with nothing made.
    await fs.writeFile(
      path.join(stateDir, "vol-l.json"),
      JSON.stringify({
        version: 1,
        key: "vol-l",
        kind: "nbdfuse-loop",
        socketPath: nbdkit.socketPath,
        exportName: "vol-l",
        readOnly: false,
        expectedSizeBytes: SIZE,
        phase: "attaching",
        createdAt: new Date().toISOString(),
        nbdfuse: {
          mountDir: path.join(stateDir, "vol-l.fuse"),
          file: path.join(stateDir, "vol-l.fuse", "disk"),
          logPath: path.join(stateDir, "vol-l.log"),
        },
      }),
    );
    expect(await attacher.find("vol-l")).toMatchObject({ health: "broken" });
    await attacher.detach("vol-l");
    expect(await fs.readdir(stateDir)).toEqual([]);
  });

  it("attaches and detaches several volumes concurrently, each on its own device", async () => {
    dir = await makeTempDir();
    nbdkit = await startNbdkit(dir, ["memory", String(SIZE)]);
    const attacher = new NbdfuseLoopAttacher({ stateDir: path.join(dir, "state") });
    const keys = ["c-0", "c-1", "c-2", "c-3"];
    const attachments = await Promise.all(
      keys.map((key) =>
        attacher.attach({
          key,
          socketPath: nbdkit!.socketPath,
          exportName: key,
          readOnly: false,
          sizeBytes: SIZE,
        }),
      ),
    );
    expect(new Set(attachments.map((a) => a.devicePath)).size).toBe(keys.length);
    expect(attachments.every((a) => a.health === "ok")).toBe(true);
    expect((await leftoversUnder(dir)).loops).toHaveLength(keys.length);
    await Promise.all(keys.map((key) => attacher.detach(key)));
    expect(await leftoversUnder(dir)).toEqual({ mounts: [], loops: [], pids: [nbdkit.process.pid] });
  });

  it("fails cleanly when the server is not there", async () => {
    dir = await makeTempDir();
    const stateDir = path.join(dir, "state");
    const attacher = new NbdfuseLoopAttacher({ stateDir, readyTimeoutMs: 5_000 });
    await expect(
      attacher.attach({
        key: "v",
        socketPath: path.join(dir, "nope.sock"),
        exportName: "v",
        readOnly: false,
        sizeBytes: 0,
      }),
    ).rejects.toMatchObject({ code: "NOT_FOUND" });
    // Something that is not an NBD server on the socket: nbdfuse fails, its log says why.
    const notNbd = net.createServer((socket) => {
      // nbdfuse hangs up on us as soon as it sees the reply is not NBD.
      socket.on("error", () => socket.destroy());
      socket.end("HTTP/1.0 400 Bad Request\r\n\r\n");
    });
    const notNbdPath = path.join(dir, "not-nbd.sock");
    await new Promise<void>((resolve) => notNbd.listen(notNbdPath, resolve));
    try {
      await expect(
        attacher.attach({ key: "v", socketPath: notNbdPath, exportName: "v", readOnly: false, sizeBytes: 0 }),
      ).rejects.toMatchObject({ code: "IO", message: expect.stringMatching(/nbdfuse .* exited/) as string });
    } finally {
      await new Promise<void>((resolve) => notNbd.close(() => resolve()));
    }
    expect(await fs.readdir(stateDir)).toEqual([]);
    // An export smaller than the volume: refused, and nothing is left behind.
    nbdkit = await startNbdkit(dir, ["memory", String(SIZE)]);
    await expect(
      attacher.attach({
        key: "v",
        socketPath: nbdkit.socketPath,
        exportName: "v",
        readOnly: false,
        sizeBytes: 2 * SIZE,
      }),
    ).rejects.toMatchObject({ code: "OUT_OF_RANGE" });
    expect(await leftoversUnder(dir)).toEqual({ mounts: [], loops: [], pids: [nbdkit.process.pid] });
    expect(await fs.readdir(stateDir)).toEqual([]);
  });
});
