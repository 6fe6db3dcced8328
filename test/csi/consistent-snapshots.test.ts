import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { status } from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { PARAM_ALLOW_MODE_CHANGE, PARAM_FREEZE, callCsi } from "../../pkg/csi/index.js";
import { checkFilesystem, runCommand } from "../../pkg/mount/index.js";
import { MiB, createVolume, type SnapshotOut } from "./csi-fixtures.js";
import { missingWrites, startFileWriter, type FileWriter } from "./file-writer.js";
import { failureCode, startLocal, type LocalProcess } from "./local-process.js";
import { scrub } from "../node-layer/harness.js";
import { rootWithTools } from "../node-tools.js";

/**
 * Filesystem-consistent snapshots through the real binary and real mounts: a volume staged with
 * ext4 or xfs, a child process writing and fsyncing files, snapshots taken meanwhile. Each
 * snapshot, restored into a new volume, must be a clean filesystem without its journal: ext4
 * without needs_recovery and e2fsck -fn clean; xfs with every acknowledged file there when mounted
 * with norecovery (its metadata is in place, not only in the log), and xfs_repair -n clean. And
 * every file the writer acknowledged before the snapshot is in it. Needs root and the node tools.
 */
const haveTools = rootWithTools(["nbdfuse", "losetup", "mkfs.xfs", "fsfreeze", "dumpe2fs"]);

type FsType = "ext4" | "xfs";
const SIZE: Record<FsType, number> = { ext4: 64 * MiB, xfs: 320 * MiB };
const mountCap = (fsType: FsType) => ({ mount: { fsType }, accessMode: { mode: "SINGLE_NODE_WRITER" } });
const BLOCK_CAP = { block: {}, accessMode: { mode: "SINGLE_NODE_WRITER" } };

let local: LocalProcess;
let kubelet: string;
let writer: FileWriter | undefined;
beforeAll(async () => {
  if (!haveTools) return;
  const dataDir = mkdtempSync(path.join(tmpdir(), "sb-freeze-"));
  kubelet = path.join(dataDir, "kubelet");
  local = await startLocal({ dataDir, args: ["--path-root", kubelet, "--pool-size", "2G"] });
});
afterEach(async () => {
  await writer?.stop();
  writer = undefined;
});
afterAll(async () => {
  if (!haveTools) return;
  let code: number | null = null;
  let left: string[] = [];
  try {
    code = await local.stop();
    left = mounted(local.dataDir);
  } finally {
    // Whatever a failed test left staged, frozen or attached goes too (never rm through a mount).
    await scrub(local.dataDir);
  }
  expect(code).toBe(0);
  expect(left).toEqual([]);
});

function mounted(dir: string): string[] {
  return execFileSync("cat", ["/proc/self/mountinfo"])
    .toString()
    .split("\n")
    .filter((l) => l.includes(dir));
}

interface Staged {
  volumeId: string;
  staging: string;
  target: string;
  cap: object;
}

async function stage(volumeId: string, cap: object, name: string): Promise<Staged> {
  const staging = path.join(kubelet, "staging", name);
  const target = path.join(kubelet, "pods", name, "volume");
  mkdirSync(staging, { recursive: true });
  mkdirSync(path.dirname(target), { recursive: true });
  await callCsi(
    local.clients.node,
    "NodeStageVolume",
    { volumeId, stagingTargetPath: staging, volumeCapability: cap },
    120_000,
  );
  await callCsi(local.clients.node, "NodePublishVolume", {
    volumeId,
    stagingTargetPath: staging,
    targetPath: target,
    volumeCapability: cap,
  });
  return { volumeId, staging, target, cap };
}

async function unstage(s: Staged): Promise<void> {
  await callCsi(local.clients.node, "NodeUnpublishVolume", { volumeId: s.volumeId, targetPath: s.target });
  await callCsi(
    local.clients.node,
    "NodeUnstageVolume",
    { volumeId: s.volumeId, stagingTargetPath: s.staging },
    60_000,
  );
}

async function newVolume(name: string, fsType: FsType): Promise<string> {
  return (
    await createVolume(local.clients.controller, {
      name,
      volumeCapabilities: [mountCap(fsType)],
      capacityRange: { requiredBytes: SIZE[fsType] },
    })
  ).volume.volumeId;
}

function snapshot(name: string, volumeId: string, parameters: Record<string, string> = {}) {
  return callCsi<{ snapshot: SnapshotOut }>(
    local.clients.controller,
    "CreateSnapshot",
    { name, sourceVolumeId: volumeId, parameters },
    60_000,
  );
}

/** The snapshot's log lines "froze the filesystem for a snapshot" of one volume. */
function freezes(volumeId: string): Array<Record<string, unknown>> {
  const engineName = volumeId.split("/")[1];
  return local.log
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.msg === "froze the filesystem for a snapshot" && l.volume === engineName);
}

/** Whether the filesystem at a mount point is frozen: FITHAW succeeds only on a frozen one. */
async function thawIfFrozen(mountPoint: string): Promise<boolean> {
  const res = await runCommand({
    command: "fsfreeze",
    args: ["--unfreeze", mountPoint],
    acceptExitCodes: [1],
  });
  return res.exitCode === 0;
}

interface RestoredCheck {
  /** ext4: the superblock's needs_recovery flag. */
  needsRecovery?: boolean;
  /** e2fsck -fn / xfs_repair -n (xfs: after its covered log was replayed by a mount). */
  clean: boolean;
  checkOutput: string;
  /** Acknowledged writes missing from the filesystem read without its journal. */
  missing: string[];
}

/**
 * Restores a snapshot into a new volume, attaches it as a raw block device (stage + publish
 * block), and checks the filesystem on it as the snapshot left it: first without the journal
 * (ext4: the needs_recovery flag and e2fsck -fn; both: a read-only mount that does not replay the
 * journal, noload / norecovery, must show every write acknowledged before the snapshot).
 */
async function checkRestored(snap: SnapshotOut, fsType: FsType, ackedBefore: number): Promise<RestoredCheck> {
  const name = `restore-${snap.snapshotId.split("/")[1]}`;
  const restored = (
    await createVolume(local.clients.controller, {
      name,
      volumeCapabilities: [BLOCK_CAP],
      // Read the filesystem's blocks raw, to check it without mounting (volume-mode.ts: an opt-in).
      parameters: { [PARAM_ALLOW_MODE_CHANGE]: "true" },
      volumeContentSource: { snapshot: { snapshotId: snap.snapshotId } },
    })
  ).volume.volumeId;
  const attached = await stage(restored, BLOCK_CAP, name);
  const device = attached.target;
  const mnt = path.join(local.dataDir, "check", name);
  mkdirSync(mnt, { recursive: true });
  try {
    const out: RestoredCheck = { clean: false, checkOutput: "", missing: [] };
    if (fsType === "ext4") {
      const header = execFileSync("dumpe2fs", ["-h", device], {
        stdio: ["ignore", "pipe", "ignore"],
      }).toString();
      const features = /^Filesystem features:(.*)$/m.exec(header)?.[1] ?? "";
      out.needsRecovery = features.split(/\s+/).includes("needs_recovery");
      const check = await checkFilesystem({ device, fsType });
      out.clean = check.clean;
      out.checkOutput = check.output;
    }
    const withoutJournal = fsType === "ext4" ? "ro,noload" : "ro,norecovery,nouuid";
    await runCommand({ command: "mount", args: ["-t", fsType, "-o", withoutJournal, device, mnt] });
    try {
      out.missing = missingWrites(mnt, ackedBefore);
    } finally {
      await runCommand({ command: "umount", args: [mnt] });
    }
    if (fsType === "xfs") {
      // An xfs freeze writes the metadata back in place but leaves the log covered, not
      // unmounted: xfs_repair -n wants it replayed first, which a mount does (nothing to redo).
      await runCommand({ command: "mount", args: ["-t", "xfs", "-o", "nouuid", device, mnt] });
      await runCommand({ command: "umount", args: [mnt] });
      const check = await checkFilesystem({ device, fsType });
      out.clean = check.clean;
      out.checkOutput = check.output;
    }
    return out;
  } finally {
    await unstage(attached);
    await callCsi(local.clients.controller, "DeleteVolume", { volumeId: restored });
  }
}

describe.skipIf(!haveTools)("filesystem-consistent snapshots", () => {
  it.each(["ext4", "xfs"] as const)(
    "%s: snapshots under a file-writing load restore clean, without journal recovery",
    async (fsType) => {
      const volumeId = await newVolume(`pvc-consistent-${fsType}`, fsType);
      const staged = await stage(volumeId, mountCap(fsType), `consistent-${fsType}`);
      writer = startFileWriter(staged.target);
      await writer.waitFor(20);
      const taken: Array<{ snap: SnapshotOut; ackedBefore: number }> = [];
      for (let i = 0; i < 4; i++) {
        const ackedBefore = writer.acked();
        const snap = (await snapshot(`snap-consistent-${fsType}-${i}`, volumeId)).snapshot;
        taken.push({ snap, ackedBefore });
        // The writer goes on after each thaw.
        await writer.waitFor(writer.acked() + 10);
      }
      await writer.stop();
      writer = undefined;
      const froze = freezes(volumeId);
      expect(froze).toHaveLength(4);
      for (const line of froze) expect(line.mountPoint).toBe(staged.staging);

      for (const { snap, ackedBefore } of taken) {
        const check = await checkRestored(snap, fsType, ackedBefore);
        expect({ snapshot: snap.snapshotId, ...check, checkOutput: undefined }).toEqual({
          snapshot: snap.snapshotId,
          ...(fsType === "ext4" ? { needsRecovery: false } : {}),
          clean: true,
          checkOutput: undefined,
          missing: [],
        });
        await callCsi(local.clients.controller, "DeleteSnapshot", { snapshotId: snap.snapshotId });
      }
      await unstage(staged);
      await callCsi(local.clients.controller, "DeleteVolume", { volumeId });
    },
  );

  it(`with ${PARAM_FREEZE}: "false" the snapshot is taken as the filesystem is (ext4: needs recovery)`, async () => {
    const volumeId = await newVolume("pvc-unfrozen", "ext4");
    const staged = await stage(volumeId, mountCap("ext4"), "unfrozen");
    writer = startFileWriter(staged.target);
    await writer.waitFor(20);
    const ackedBefore = writer.acked();
    const snap = (await snapshot("snap-unfrozen", volumeId, { [PARAM_FREEZE]: "false" })).snapshot;
    await writer.waitFor(ackedBefore + 10);
    await writer.stop();
    writer = undefined;
    expect(freezes(volumeId)).toEqual([]);
    // A mounted ext4 carries needs_recovery until it is frozen or unmounted: this is what the
    // freeze spares a restore, and shows that the clean results above are the freeze's doing.
    const check = await checkRestored(snap, "ext4", 0);
    expect(check.needsRecovery).toBe(true);
    await callCsi(local.clients.controller, "DeleteSnapshot", { snapshotId: snap.snapshotId });
    // Unknown VolumeSnapshotClass parameters and bad values stay INVALID_ARGUMENT.
    const badParameters: Array<Record<string, string>> = [
      { [PARAM_FREEZE]: "no" },
      { "snapblock.dev/quiesce": "true" },
    ];
    for (const parameters of badParameters) {
      const bad = await failureCode(snapshot("snap-bad-param", volumeId, parameters));
      expect(bad.code).toBe(status.INVALID_ARGUMENT);
    }
    await unstage(staged);
    await callCsi(local.clients.controller, "DeleteVolume", { volumeId });
  });

  it("a failed snapshot leaves the filesystem thawed and the writer writing", async () => {
    const volumeId = await newVolume("pvc-fail", "ext4");
    const otherId = await newVolume("pvc-fail-other", "ext4");
    const staged = await stage(volumeId, mountCap("ext4"), "fail");
    const taken = (await snapshot("snap-taken-name", otherId)).snapshot;
    writer = startFileWriter(staged.target);
    await writer.waitFor(10);

    // The name belongs to another volume's snapshot: ALREADY_EXISTS, and the writer goes on.
    const dup = await failureCode(snapshot("snap-taken-name", volumeId));
    expect(dup.code).toBe(status.ALREADY_EXISTS);
    await writer.waitFor(writer.acked() + 10);
    expect(await thawIfFrozen(staged.staging)).toBe(false);

    // Someone else froze the filesystem: the snapshot fails (FAILED_PRECONDITION, saying so),
    // nothing is left behind, and their freeze is theirs to undo: it stays until they thaw.
    await runCommand({ command: "fsfreeze", args: ["--freeze", staged.staging] });
    const frozenAt = writer.acked();
    const busy = await failureCode(snapshot("snap-while-frozen", volumeId));
    expect(busy.code).toBe(status.FAILED_PRECONDITION);
    expect(busy.details).toContain("frozen already");
    expect(busy.details).toContain(PARAM_FREEZE);
    const gone = await failureCode(
      callCsi(local.clients.controller, "GetSnapshot", { snapshotId: `local/snap-while-frozen` }),
    );
    expect(gone.code).toBe(status.NOT_FOUND);
    expect(writer.acked()).toBeLessThanOrEqual(frozenAt + 1);
    expect(await thawIfFrozen(staged.staging)).toBe(true);
    await writer.waitFor(frozenAt + 10);

    // And with the filesystem thawed again, a snapshot works.
    await snapshot("snap-after-failures", volumeId);
    expect(freezes(volumeId)).toHaveLength(1);
    await writer.waitFor(writer.acked() + 5);
    await writer.stop();
    writer = undefined;
    await unstage(staged);
    for (const snapshotId of [taken.snapshotId, "local/snap-after-failures"])
      await callCsi(local.clients.controller, "DeleteSnapshot", { snapshotId });
    for (const id of [volumeId, otherId])
      await callCsi(local.clients.controller, "DeleteVolume", { volumeId: id });
  });

  it("raw block and unstaged volumes are snapshotted as they are", async () => {
    const block = (
      await createVolume(local.clients.controller, {
        name: "pvc-raw",
        volumeCapabilities: [BLOCK_CAP],
        capacityRange: { requiredBytes: 16 * MiB },
      })
    ).volume.volumeId;
    const staged = await stage(block, BLOCK_CAP, "raw");
    const unstaged = await newVolume("pvc-unstaged", "ext4");
    const snaps = [
      (await snapshot("snap-raw", block)).snapshot,
      (await snapshot("snap-unstaged", unstaged)).snapshot,
    ];
    expect([...freezes(block), ...freezes(unstaged)]).toEqual([]);
    for (const s of snaps)
      await callCsi(local.clients.controller, "DeleteSnapshot", { snapshotId: s.snapshotId });
    await unstage(staged);
    for (const id of [block, unstaged])
      await callCsi(local.clients.controller, "DeleteVolume", { volumeId: id });
  });
});
