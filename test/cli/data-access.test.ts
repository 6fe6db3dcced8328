import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import {
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  closeSync,
  writeFileSync,
  writeSync,
  fsyncSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { removeDataDir, startLocal, type LocalProcess } from "../csi/local-process.js";
import { ROOT, TSX, runCli } from "./run-cli.js";
import { rootWithTools } from "../node-tools.js";

const run = promisify(execFile);

/**
 * Reaching a volume's data with the CLI alone, against the real `snapblock local`, real mounts
 * and the real NBD tools: attach/detach (CSI Node calls), export/unexport (operator service).
 * Needs root, FUSE and the NBD tools (see .ci/run); skipped otherwise.
 */
const haveTools = rootWithTools(["nbdfuse", "nbdinfo", "nbdcopy", "qemu-img"]);

let local: LocalProcess;
let work: string;
const cli = (...args: string[]) => runCli(local.socketPath, args, { cwd: work });
const ok = async (...args: string[]) => {
  const res = await cli(...args);
  if (res.code !== 0) throw new Error(`snapblock ${args.join(" ")} exited ${res.code}: ${res.stderr}`);
  return res.stdout;
};
const mountsUnder = (dir: string) =>
  readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter((l) => l.includes(dir));

async function waitFor(check: () => boolean): Promise<void> {
  for (let i = 0; i < 100 && !check(); i++) await new Promise((r) => setTimeout(r, 100));
  if (!check()) throw new Error("timed out waiting for nbdfuse");
}

function exited(child: ChildProcess): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), 5000);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

beforeAll(async () => {
  if (!haveTools) return;
  work = mkdtempSync(path.join(tmpdir(), "sb-access-"));
  local = await startLocal({ dataDir: path.join(work, "snapblock-data"), args: ["--pool-size", "2G"] });
});
afterAll(async () => {
  if (!haveTools) return;
  // A failed test may leave volumes attached (attachments outlive the process by design).
  const list = JSON.parse((await cli("volume", "list", "--json")).stdout) as Array<{
    volume: { volumeId: string };
    state: { state: string };
  }>;
  for (const entry of list) {
    if (entry.state.state !== "detached") await cli("volume", "detach", entry.volume.volumeId);
  }
  await local.stop();
  expect(mountsUnder(work)).toEqual([]);
  removeDataDir(work);
});

describe.skipIf(!haveTools)("reaching the data with the CLI", () => {
  it("runs the README's loop as written: create, write a file, snapshot, change it, restore, read the old file", async () => {
    // The shell blocks of README.md's "Two commands" section that use the CLI, run as they are
    // in a directory where `snapblock local` serves ./snapblock-data (the README's default).
    // `snapblock` is the CLI from this source tree; `npm link` is skipped (it installs it).
    const readme = readFileSync(path.join(ROOT, "README.md"), "utf8");
    const section = readme.slice(readme.indexOf("## Two commands"), readme.indexOf("## Layout"));
    const blocks = [...section.matchAll(/```sh\n([\s\S]*?)```/g)]
      .map((m) => m[1]!)
      .filter((b) => b.includes("snapblock "));
    expect(blocks.length).toBe(2);
    const script = [
      "set -eu",
      `snapblock() { "${process.execPath}" --import "${TSX}" "${path.join(ROOT, "cmd/snapblock.ts")}" "$@"; }`,
      ...blocks
        .join("\n")
        .split("\n")
        .filter((line) => !line.startsWith("npm ")),
    ].join("\n");
    const { stdout } = await run("sh", ["-c", script], { cwd: work });
    expect(stdout).toMatch(/^buy milk$/m);
    expect(stdout).toMatch(/^local\/notes +1 GiB +ext4 +staged /m);
    expect(stdout).toMatch(/^local\/notes-monday +1 GiB +ext4 +published /m);
    expect(stdout).toMatch(/is_read_only: true/);
    expect(stdout).not.toMatch(/buy bread/);
    expect(stdout).toMatch(/allocated of 1 GiB/);
    expect(stdout).toMatch(/changed of 1 GiB/);
    expect(existsSync(path.join(work, "monday.qcow2"))).toBe(true);
    expect(mountsUnder(work)).toEqual([]);
  });

  it("keeps a raw block volume raw through snapshot and restore (the data is not formatted over)", async () => {
    await ok("volume", "create", "raw", "--size", "64M", "--block");
    const device = /block device at (\S+)/.exec(await ok("volume", "attach", "local/raw"))?.[1] ?? "";
    const fd = openSync(device, "r+");
    const buf = Buffer.alloc(4096);
    buf.write("raw bytes blkid does not know");
    writeSync(fd, buf, 0, buf.length, 1 << 20);
    fsyncSync(fd);
    closeSync(fd);
    await ok("snapshot", "create", "local/raw", "raw-snap");
    await ok("volume", "detach", "local/raw");
    const restored = await ok("volume", "restore", "local/raw-snap", "raw-back");
    expect(restored).toMatch(/mode: +block/);
    const again = /block device at (\S+)/.exec(await ok("volume", "attach", "local/raw-back"))?.[1] ?? "";
    const back = Buffer.alloc(4096);
    const rd = openSync(again, "r");
    readSync(rd, back, 0, back.length, 1 << 20);
    closeSync(rd);
    expect(back.toString("utf8").replace(/\0+$/, "")).toBe("raw bytes blkid does not know");
    await ok("volume", "detach", "local/raw-back");
  });

  it("exports volumes read-write and snapshots read-only to nbdinfo, nbdcopy, qemu-img and nbdfuse", async () => {
    await ok("volume", "create", "disk", "--size", "64M", "--block");
    const uri = (await ok("volume", "export", "local/disk")).trim();
    expect(uri).toMatch(/^nbd\+unix:\/\/\/volume\/disk\?socket=\//);
    expect(execFileSync("nbdinfo", ["--size", uri]).toString().trim()).toBe(String(64 << 20));
    // Write through NBD with nbdcopy, then snapshot and read it back through the snapshot export.
    const image = path.join(work, "image.bin");
    const pattern = Buffer.alloc(1 << 20, 0x5a);
    writeFileSync(image, pattern);
    execFileSync("nbdcopy", ["--destination-is-zero", image, uri]);
    expect(await ok("volume", "export", "local/disk")).toBe(`${uri}\n`);
    await ok("volume", "unexport", "local/disk");
    await ok("snapshot", "create", "local/disk", "disk-snap");
    const snapUri = (await ok("snapshot", "export", "local/disk-snap")).trim();
    expect(execFileSync("nbdinfo", ["--json", snapUri]).toString()).toMatch(/"is_read_only": true/);
    expect(execFileSync("qemu-img", ["info", "--output=json", snapUri]).toString()).toMatch(
      /"virtual-size": 67108864/,
    );
    const copy = path.join(work, "copy.bin");
    execFileSync("nbdcopy", [snapUri, copy]);
    expect(readFileSync(copy).subarray(0, pattern.length).equals(pattern)).toBe(true);
    // Read-only means read-only: nbdcopy into the snapshot fails.
    expect(() => execFileSync("nbdcopy", [image, snapUri], { stdio: "pipe" })).toThrow();
    // nbdfuse exposes it as a file.
    const fuse = path.join(work, "fuse");
    execFileSync("mkdir", ["-p", fuse]);
    const nbdfuse = spawn("nbdfuse", ["-r", fuse, snapUri], { stdio: "ignore" });
    try {
      await waitFor(() => existsSync(path.join(fuse, "nbd")));
      const fd = openSync(path.join(fuse, "nbd"), "r");
      const head = Buffer.alloc(16);
      readSync(fd, head, 0, 16, 0);
      closeSync(fd);
      expect(head.equals(Buffer.alloc(16, 0x5a))).toBe(true);
    } finally {
      // Unmounting makes nbdfuse exit; it is ours to stop by pid if it does not.
      execFileSync("fusermount3", ["-u", fuse]);
      if (nbdfuse.exitCode === null && !(await exited(nbdfuse))) nbdfuse.kill("SIGKILL");
    }
    expect(await ok("snapshot", "unexport", "local/disk-snap")).toBe(
      "stopped the export of snapshot local/disk-snap\n",
    );
    expect(await ok("snapshot", "unexport", "local/disk-snap")).toBe(
      "snapshot local/disk-snap was not exported\n",
    );
  });

  it("lets one user at a time have a volume, and never formats data written through an export", async () => {
    await ok("volume", "create", "shared", "--size", "64M");
    await ok("volume", "attach", "local/shared");
    const busy = await cli("volume", "export", "local/shared");
    expect(busy.code).toBe(1);
    expect(busy.stderr).toMatch(/FAILED_PRECONDITION.*is staged on this node.*detach it first/);
    await ok("volume", "detach", "local/shared");

    await ok("volume", "create", "fresh", "--size", "64M");
    const uri = (await ok("volume", "export", "local/fresh")).trim();
    const attach = await cli("volume", "attach", "local/fresh");
    expect(attach.code).toBe(1);
    expect(attach.stderr).toMatch(/FAILED_PRECONDITION.*is exported over NBD.*volume unexport local\/fresh/);
    // Raw bytes written through the export: blkid sees no filesystem, and the node must not make one.
    const raw = path.join(work, "raw.bin");
    writeFileSync(raw, Buffer.alloc(1 << 20, 0x42));
    execFileSync("nbdcopy", [raw, uri]);
    await ok("volume", "unexport", "local/fresh");
    const refused = await cli("volume", "attach", "local/fresh");
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/FAILED_PRECONDITION.*used as a raw block device.*--allow-mode-change/);
    expect(mountsUnder(work)).toEqual([]);
  });
});
