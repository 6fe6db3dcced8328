import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { removeDataDir, startLocal, type LocalProcess } from "../csi/local-process.js";
import { runCli } from "./run-cli.js";

// The operator CLI against the real `snapblock local`: what it says and which exit code it gives.
let local: LocalProcess;
const cli = (...args: string[]) => runCli(local.socketPath, args);

beforeAll(async () => {
  local = await startLocal({
    dataDir: mkdtempSync(path.join(tmpdir(), "sb-cli-")),
    args: ["--attach", "none"],
  });
});
afterAll(async () => {
  await local.stop();
  removeDataDir(local.dataDir);
});

describe("operator CLI: volumes", () => {
  it("shows a block volume as block, never with a filesystem, and its restores keep that mode", async () => {
    const created = await cli("volume", "create", "raw", "--size", "64M", "--block");
    expect(created).toMatchObject({ code: 0 });
    expect(created.stdout).toMatch(/mode: +block \(raw block device\)/);
    expect(created.stdout).not.toMatch(/ext4|filesystem/);
    const json = JSON.parse((await cli("volume", "get", "local/raw", "--json")).stdout) as {
      volume: { volumeContext: Record<string, string> };
    };
    expect(json.volume.volumeContext).toEqual({ "snapblock.dev/volumeMode": "block" });
    const list = await cli("volume", "list");
    expect(list.stdout).toMatch(/^VOLUME ID +SIZE +MODE/m);
    expect(list.stdout).toMatch(/^local\/raw +64 MiB +block /m);

    expect((await cli("snapshot", "create", "local/raw", "raw-snap")).code).toBe(0);
    const restored = await cli("volume", "restore", "local/raw-snap", "raw-copy");
    expect(restored).toMatchObject({ code: 0 });
    expect(restored.stdout).toMatch(/mode: +block/);
    const cloned = await cli("volume", "clone", "local/raw", "raw-clone");
    expect(cloned.stdout).toMatch(/mode: +block/);
    // Asked for a filesystem over raw data: the controller refuses and says why.
    const asFs = await cli("volume", "restore", "local/raw-snap", "raw-as-fs", "--fs", "ext4");
    expect(asFs.code).toBe(1);
    expect(asFs.stderr).toMatch(/INVALID_ARGUMENT.*holds raw block data.*--allow-mode-change/);
  });

  it("keeps an xfs volume's filesystem type in its restores", async () => {
    expect((await cli("volume", "create", "fs", "--size", "320M", "--fs", "xfs")).code).toBe(0);
    expect((await cli("snapshot", "create", "local/fs", "fs-snap")).code).toBe(0);
    const restored = await cli("volume", "restore", "local/fs-snap", "fs-copy");
    expect(restored.stdout).toMatch(/mode: +filesystem \(xfs\)/);
  });

  it("refuses sizes below the source or the volume (OUT_OF_RANGE), in units", async () => {
    const small = await cli("volume", "restore", "local/raw-snap", "too-small", "--size", "32M");
    expect(small.code).toBe(1);
    expect(small.stderr).toMatch(/OUT_OF_RANGE.*smaller than the source \(64 MiB \(67108864 bytes\)\)/);
    const shrink = await cli("volume", "expand", "local/raw", "--size", "32M");
    expect(shrink.code).toBe(1);
    expect(shrink.stderr).toMatch(/OUT_OF_RANGE.*below the volume's current size 64 MiB.*never shrink/);
    const grow = await cli("volume", "expand", "local/raw", "--size", "128M");
    expect(grow).toMatchObject({ code: 0 });
    expect(grow.stdout).toMatch(/size: +128 MiB \(134217728 bytes\)/);
    const same = await cli("volume", "expand", "local/raw", "--size", "128M");
    expect(same.code).toBe(0);
  });

  it("says when there was nothing to delete (exit 0)", async () => {
    const volume = await cli("volume", "delete", "local/nope");
    expect(volume).toMatchObject({
      code: 0,
      stdout: "volume local/nope does not exist: nothing to delete\n",
    });
    const snapshot = await cli("snapshot", "delete", "local/nope");
    expect(snapshot).toMatchObject({
      code: 0,
      stdout: "snapshot local/nope does not exist: nothing to delete\n",
    });
    expect(await cli("volume", "delete", "local/raw-clone")).toMatchObject({
      code: 0,
      stdout: "deleted volume local/raw-clone\n",
    });
  });

  it("refuses a size that is not one with a usage error", async () => {
    const bad = await cli("volume", "create", "x", "--size=-5G");
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--size "-5G" is not a size/);
    const odd = await cli("volume", "create", "x", "--size", "1000");
    expect(odd.code).toBe(2);
    expect(odd.stderr).toMatch(/not a whole number of 512-byte sectors/);
  });
});
