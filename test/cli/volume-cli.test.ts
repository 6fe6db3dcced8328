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

  it("answers mistakes with a sentence and the verb's usage (exit 2), and --help with the defaults", async () => {
    const bad = await cli("volume", "create", "x", "--size", "-5G");
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(
      /^snapblock: --size "-5G" is not a size: .*\nusage: snapblock volume create NAME \[options\]\n/,
    );
    const odd = await cli("volume", "create", "x", "--size", "1000");
    expect(odd.code).toBe(2);
    expect(odd.stderr).toMatch(/not a whole number of 512-byte sectors/);
    const noName = await cli("volume", "create");
    expect(noName).toMatchObject({ code: 2 });
    expect(noName.stderr).toBe(
      "snapblock: snapblock volume create needs NAME\nusage: snapblock volume create NAME [options]\n(snapblock volume create --help for the options)\n",
    );
    const unknown = await cli("snapshot", "create", "local/raw", "s", "--frobnicate");
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(
      /^snapblock: unknown option --frobnicate\nusage: snapblock snapshot create VOLUME_ID NAME/,
    );
    const help = await cli("volume", "create", "--help");
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(
      /--size SIZE +the volume's size, exactly .*\(default 1 GiB, or the source's size\)/,
    );
    expect(help.stdout).toMatch(
      /--endpoint EP +the socket of snapblock local \(default \$SNAPBLOCK_ENDPOINT, else unix:\/\/snapblock-data\/csi.sock\)/,
    );
  });

  it("reports a name that had to be hashed", async () => {
    const res = await cli("volume", "create", "My Data", "--size", "64M");
    expect(res.code).toBe(0);
    const id = /volume id: +(\S+)/.exec(res.stdout)?.[1] ?? "";
    expect(id).toMatch(/^local\/h--[0-9a-f]{40}$/);
    expect(res.stderr).toBe(
      `note: "My Data" is not usable as a volume name as it is (letters, digits, ".", "_", "-", at most 64), so the id uses a hash of it: ${id}\n`,
    );
  });
});
