import { execFileSync } from "node:child_process";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callCsi } from "../../pkg/csi/index.js";
import { BLOCK, MOUNT_EXT4, MiB, createVolume } from "./csi-fixtures.js";
import { failureCode, removeDataDir, startLocal, type LocalProcess } from "./local-process.js";
import { rootWithTools } from "../node-tools.js";

/**
 * What a node request may touch when the node serves only the kubelet's directory (--path-root):
 * the probes of a security review, each through the real binary with real mounts. A path that
 * leads outside the root through a symbolic link, a symbolic link as the path itself, a path
 * component too long for the kernel: refused (INVALID_ARGUMENT) before anything is attached,
 * formatted, created or mounted. NodeUnpublishVolume removes only what the plugin created for
 * the volume it published there. Needs root and the node tools; skipped otherwise.
 */
const haveTools = rootWithTools(["nbdfuse", "losetup"]);

let local: LocalProcess;
let base: string;
let kubelet: string;
let outside: string;
let volumeId: string;
let blockVolumeId: string;

beforeAll(async () => {
  if (!haveTools) return;
  base = mkdtempSync(path.join(tmpdir(), "sb-paths-"));
  kubelet = path.join(base, "kubelet");
  outside = path.join(base, "outside");
  mkdirSync(kubelet);
  mkdirSync(outside);
  local = await startLocal({
    dataDir: path.join(base, "data"),
    args: ["--path-root", kubelet, "--pool-size", "1G"],
  });
  volumeId = (
    await createVolume(local.clients.controller, {
      name: "pvc-paths",
      volumeCapabilities: [MOUNT_EXT4],
      capacityRange: { requiredBytes: 64 * MiB },
    })
  ).volume.volumeId;
  blockVolumeId = (
    await createVolume(local.clients.controller, {
      name: "pvc-paths-block",
      volumeCapabilities: [BLOCK],
      capacityRange: { requiredBytes: 16 * MiB },
    })
  ).volume.volumeId;
}, 60_000);

afterAll(async () => {
  if (!haveTools) return;
  // A failed assertion may have left a volume staged: unstage it (attachments outlive the process).
  for (const [id, staging] of staged) await unstage(id, staging).catch(() => undefined);
  // Whatever a failed assertion left mounted under the test's directory goes first.
  for (const line of mountsUnder(base).reverse()) {
    const mountPoint = line.split(" ")[4]!;
    execFileSync("umount", ["-l", "--", mountPoint]);
  }
  await local.stop();
  removeDataDir(base);
});

const mountsUnder = (dir: string) =>
  readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter((l) => l.includes(dir));

/** Nothing is attached: no attachment record, no loop device over the data directory. */
function expectNothingAttached() {
  const records = existsSync(path.join(local.dataDir, "attach"))
    ? readdirSync(path.join(local.dataDir, "attach")).filter((n) => n.endsWith(".json"))
    : [];
  expect(records).toEqual([]);
  const loops = execFileSync("losetup", ["-a"])
    .toString()
    .split("\n")
    .filter((l) => l.includes(local.dataDir));
  expect(loops).toEqual([]);
}

const staged = new Set<[string, string]>();

function stage(id: string, stagingTargetPath: string, capability: object = MOUNT_EXT4) {
  staged.add([id, stagingTargetPath]);
  return callCsi(
    local.clients.node,
    "NodeStageVolume",
    { volumeId: id, stagingTargetPath, volumeCapability: capability },
    120_000,
  );
}

function unstage(id: string, stagingTargetPath: string) {
  return callCsi(local.clients.node, "NodeUnstageVolume", { volumeId: id, stagingTargetPath }, 60_000);
}

function publish(id: string, stagingTargetPath: string, targetPath: string, capability: object = MOUNT_EXT4) {
  return callCsi(local.clients.node, "NodePublishVolume", {
    volumeId: id,
    stagingTargetPath,
    targetPath,
    volumeCapability: capability,
  });
}

function unpublish(id: string, targetPath: string) {
  return callCsi(local.clients.node, "NodeUnpublishVolume", { volumeId: id, targetPath });
}

describe.skipIf(!haveTools)("node paths under --path-root", () => {
  it("refuses a staging path that leads outside the root through a symlink, before attaching anything", async () => {
    const escape = path.join(outside, "staged-here");
    mkdirSync(path.join(escape, "stage"), { recursive: true });
    symlinkSync(escape, path.join(kubelet, "link"));
    const refused = await failureCode(stage(volumeId, path.join(kubelet, "link", "stage")));
    expect(refused.code).toBe(3);
    expect(refused.details).toMatch(/outside/);
    expect(mountsUnder(base)).toEqual([]);
    expectNothingAttached();
  });

  it("refuses a staging path that is a symlink itself, even to a directory inside the root", async () => {
    mkdirSync(path.join(kubelet, "real-stage"));
    symlinkSync(path.join(kubelet, "real-stage"), path.join(kubelet, "stage-link"));
    const refused = await failureCode(stage(volumeId, path.join(kubelet, "stage-link")));
    expect(refused.code).toBe(3);
    expect(refused.details).toMatch(/symbolic link/);
    expect(mountsUnder(base)).toEqual([]);
    expectNothingAttached();
  });

  it("refuses a path component longer than the kernel takes (INVALID_ARGUMENT), before attaching or formatting", async () => {
    const long = path.join(kubelet, "x".repeat(300), "stage");
    const refused = await failureCode(stage(volumeId, long));
    expect(refused.code).toBe(3);
    expect(refused.details).toMatch(/255 bytes/);
    expectNothingAttached();
    // Not formatted either: a later stage makes the filesystem (and the stage works).
    const staging = path.join(kubelet, "stage-ok");
    mkdirSync(staging);
    await stage(volumeId, staging);
    try {
      const refusedTarget = await failureCode(
        publish(volumeId, staging, path.join(kubelet, "pods", "y".repeat(256))),
      );
      expect(refusedTarget.code).toBe(3);
    } finally {
      await unstage(volumeId, staging);
    }
    expect(mountsUnder(base)).toEqual([]);
  });

  it("refuses to publish over a directory outside the root reached through a symlink", async () => {
    const staging = path.join(kubelet, "stage-publish");
    mkdirSync(staging);
    const victim = path.join(outside, "victim");
    mkdirSync(victim);
    writeFileSync(path.join(victim, "keep.txt"), "user data");
    mkdirSync(path.join(kubelet, "pods"), { recursive: true });
    symlinkSync(outside, path.join(kubelet, "pods", "pod-link"));
    await stage(volumeId, staging);
    try {
      const refused = await failureCode(
        publish(volumeId, staging, path.join(kubelet, "pods", "pod-link", "victim")),
      );
      expect(refused.code).toBe(3);
      // A symlink as the target itself, pointing inside the root, is refused too.
      mkdirSync(path.join(kubelet, "pods", "real-target"));
      symlinkSync(path.join(kubelet, "pods", "real-target"), path.join(kubelet, "pods", "target-link"));
      expect(
        (await failureCode(publish(volumeId, staging, path.join(kubelet, "pods", "target-link")))).code,
      ).toBe(3);
      expect(mountsUnder(outside)).toEqual([]);
      expect(mountsUnder(kubelet).filter((l) => !l.includes(staging))).toEqual([]);
      expect(readFileSync(path.join(victim, "keep.txt"), "utf8")).toBe("user data");
    } finally {
      await unstage(volumeId, staging);
    }
  });

  it("refuses a raw block publish onto a symlink: no device node appears outside the root", async () => {
    const staging = path.join(kubelet, "stage-block");
    mkdirSync(staging);
    mkdirSync(path.join(kubelet, "block"), { recursive: true });
    const elsewhere = path.join(outside, "device-node");
    symlinkSync(elsewhere, path.join(kubelet, "block", "dev-link"));
    await stage(blockVolumeId, staging, BLOCK);
    try {
      const refused = await failureCode(
        publish(blockVolumeId, staging, path.join(kubelet, "block", "dev-link"), BLOCK),
      );
      expect(refused.code).toBe(3);
      expect(existsSync(elsewhere)).toBe(false);
      expect(mountsUnder(outside)).toEqual([]);
      expect(mountsUnder(kubelet)).toEqual([]);
    } finally {
      await unstage(blockVolumeId, staging);
    }
  });

  it("refuses to unstage through a symlink: a mount outside the root stays mounted", async () => {
    const foreign = path.join(outside, "foreign-mount");
    mkdirSync(foreign);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", foreign]);
    try {
      symlinkSync(foreign, path.join(kubelet, "unstage-link"));
      const refused = await failureCode(unstage(volumeId, path.join(kubelet, "unstage-link")));
      expect(refused.code).toBe(3);
      expect(mountsUnder(foreign)).toHaveLength(1);
      const refusedUnpublish = await failureCode(unpublish(volumeId, path.join(kubelet, "unstage-link")));
      expect(refusedUnpublish.code).toBe(3);
      expect(mountsUnder(foreign)).toHaveLength(1);
    } finally {
      execFileSync("umount", ["--", foreign]);
    }
  });

  it("NodeUnpublishVolume removes nothing it did not create, for a volume it did not publish there", async () => {
    // A file where a raw block target would be, and a directory the CO made: not the plugin's.
    const dir = path.join(kubelet, "unpublish");
    mkdirSync(dir);
    const config = path.join(dir, "config.yaml");
    writeFileSync(config, "precious: true\n");
    const coDir = path.join(dir, "co-made");
    mkdirSync(coDir);
    // Unknown volume id, and a known volume that was never published there: success, untouched.
    await unpublish(`${volumeId.split("/")[0]}/no-such-volume`, config);
    await unpublish(blockVolumeId, config);
    await unpublish(volumeId, coDir);
    expect(readFileSync(config, "utf8")).toBe("precious: true\n");
    expect(lstatSync(coDir).isDirectory()).toBe(true);

    // Published at a directory the CO made: unpublish unmounts it and leaves the directory.
    const staging = path.join(kubelet, "stage-unpublish");
    mkdirSync(staging);
    await stage(volumeId, staging);
    try {
      await publish(volumeId, staging, coDir);
      writeFileSync(path.join(coDir, "in-volume.txt"), "x");
      // Another volume's unpublish at this target neither unmounts nor removes it.
      await unpublish(blockVolumeId, coDir);
      expect(existsSync(path.join(coDir, "in-volume.txt"))).toBe(true);
      await unpublish(volumeId, coDir);
      expect(lstatSync(coDir).isDirectory()).toBe(true);
      expect(existsSync(path.join(coDir, "in-volume.txt"))).toBe(false);
      // Published at a path the plugin created: unpublish removes exactly that.
      const created = path.join(dir, "plugin-made");
      await publish(volumeId, staging, created);
      await unpublish(volumeId, created);
      await unpublish(volumeId, created);
      expect(existsSync(created)).toBe(false);
    } finally {
      await unstage(volumeId, staging);
    }
    expect(mountsUnder(base)).toEqual([]);
  });
});

describe.skipIf(!haveTools)("raw block targets", () => {
  it("a pre-existing file under a raw block target survives publish and unpublish", async () => {
    const staging = path.join(kubelet, "stage-block-2");
    mkdirSync(staging);
    const target = path.join(kubelet, "block-existing");
    writeFileSync(target, "");
    await stage(blockVolumeId, staging, BLOCK);
    try {
      await publish(blockVolumeId, staging, target, BLOCK);
      await unpublish(blockVolumeId, target);
      // The CO's file: still there (the plugin did not create it).
      expect(lstatSync(target).isFile()).toBe(true);
      const made = path.join(kubelet, "block-made");
      await publish(blockVolumeId, staging, made, BLOCK);
      expect(lstatSync(made).isBlockDevice() || lstatSync(made).isFile()).toBe(true);
      await unpublish(blockVolumeId, made);
      expect(existsSync(made)).toBe(false);
    } finally {
      await unstage(blockVolumeId, staging);
      rmSync(target, { force: true });
    }
    expect(mountsUnder(base)).toEqual([]);
  });
});
