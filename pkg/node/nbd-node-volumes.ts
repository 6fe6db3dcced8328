import { promises as fs } from "node:fs";
import type { Attachment } from "../attach/index.js";
import { SnapblockError, isSnapblockError, StatusError } from "../errors/index.js";
import {
  assertNodePath,
  blockDeviceSize,
  bindMount,
  ensureFilesystem,
  findMount,
  findMountsOfDevice,
  growFilesystem,
  isMountPoint,
  mountFilesystem,
  prepareMountTarget,
  removeMountTarget,
  unmount,
  volumeStats,
} from "../mount/index.js";
import type {
  NodeExpandOptions,
  NodePublishOptions,
  NodeStageOptions,
  NodeStatsOptions,
  NodeUnpublishOptions,
  NodeUnstageOptions,
  NodeVolumeManager,
  NodeVolumeStats,
} from "../csi/index.js";
import type { Logger } from "../log/index.js";
import type { NodeDataPlane, VolumeAttachmentFacts } from "./data-plane.js";
import { PublicationStore } from "./publications.js";

export interface NbdNodeVolumesOptions {
  /** The node's data plane: the pool, the NBD exports and the block devices (data-plane.ts). */
  dataPlane: NodeDataPlane;
  /** Directory of the records of what was published where (publications.ts; created 0700). */
  publicationDir: string;
  /**
   * When set, every staging and target path must resolve, symbolic links followed, strictly
   * inside one of these directories (the node's --path-root).
   */
  pathRoots?: readonly string[];
  logger: Logger;
}

/**
 * The node plugin's half of the node data path (docs/node-attach.md, "How a volume reaches a
 * pod"): the data plane exports the volume and attaches it as a kernel block device; here it is
 * given a filesystem on first use and mounted at the staging path by pkg/mount, then bind-mounted
 * into the pod. Nothing is held in memory: every call reads the attachments from the data plane
 * and the mounts from the kernel, so a node plugin restarted at any moment carries on. Every step
 * is idempotent, so a retried call picks up where a failed one stopped.
 */
export class NbdNodeVolumes implements NodeVolumeManager {
  private readonly publications: PublicationStore;

  constructor(private readonly options: NbdNodeVolumesOptions) {
    this.publications = new PublicationStore(options.publicationDir);
  }

  /** Every volume attached on this node, with its device's health and mounts (for `volume list`). */
  attachments(): Promise<VolumeAttachmentFacts[]> {
    return this.options.dataPlane.attachments();
  }

  stage(o: NodeStageOptions): Promise<void> {
    return this.options.dataPlane.exclusive(o.engineName, () => this.stageNow(o));
  }

  private async stageNow(o: NodeStageOptions): Promise<void> {
    // Every path checked before anything is exported, attached or formatted (CSI: the CO creates
    // the staging directory).
    await this.checkPath(o.stagingPath, "staging_target_path", "directory");
    const dataPlane = this.options.dataPlane;
    const attachedBefore = (await dataPlane.find(o.engineName)) !== undefined;
    const attachment = await dataPlane.attach({ engineName: o.engineName, label: o.volumeId });
    if (o.capability.accessType === "block") return;
    const devicePath = requireDevice(attachment, o.volumeId);
    const made = await ensureFilesystem({
      device: devicePath,
      fsType: o.fsType,
      formatBlank: o.refuseFormat === undefined,
    });
    if (made === "blank" && o.refuseFormat !== undefined) {
      // Nothing was written: take away what this call attached, so that nothing is left behind.
      if (!attachedBefore) await dataPlane.detach(o.engineName);
      throw new StatusError("FAILED_PRECONDITION", o.refuseFormat);
    }
    await prepareMountTarget({ path: o.stagingPath, kind: "directory" });
    const readOnly = o.capability.mode === "SINGLE_NODE_READER_ONLY";
    await mountFilesystem({
      device: devicePath,
      target: o.stagingPath,
      fsType: o.fsType,
      readOnly,
      flags: o.capability.mountFlags,
    });
    // A volume expanded while it was not staged: grow its filesystem now (a no-op when it fits).
    // Best effort: the volume is usable at its old filesystem size, and NodeExpandVolume reports
    // the reason when growing is not possible here (e.g. no CAP_SYS_RESOURCE for resize2fs).
    if (made === "existing" && !readOnly) {
      try {
        await growFilesystem({ device: devicePath, mountPath: o.stagingPath, fsType: o.fsType });
      } catch (err) {
        this.options.logger.warn("could not grow the filesystem while staging; it keeps its size", {
          volumeId: o.volumeId,
          err,
        });
      }
    }
  }

  async unstage(o: NodeUnstageOptions): Promise<void> {
    await this.checkPath(o.stagingPath, "staging_target_path");
    // Unmounted out of any snapshot's freeze (LocalDataPlane.quiesce).
    await this.options.dataPlane.exclusive(o.engineName, () => unmount(o.stagingPath));
    await this.options.dataPlane.detach(o.engineName);
  }

  async publish(o: NodePublishOptions): Promise<void> {
    const kind = o.capability.accessType === "block" ? "file" : "directory";
    const target = await this.checkPath(o.targetPath, "target_path", kind);
    await this.checkPath(o.stagingPath, "staging_target_path");
    let source: string;
    if (o.capability.accessType === "block") {
      const attachment = await this.options.dataPlane.find(o.engineName);
      if (!attachment) throw notStaged(o.volumeId);
      source = requireDevice(attachment, o.volumeId);
    } else {
      if (!(await isMountPoint(o.stagingPath))) throw notStaged(o.volumeId);
      source = o.stagingPath;
    }
    const earlier = await this.publications.get(o.targetPath);
    const record = {
      volumeId: o.volumeId,
      engineName: o.engineName,
      targetPath: o.targetPath,
      kind,
    } as const;
    // A target the plugin makes is recorded before it exists (a crash in between leaves a record of
    // nothing, which unpublish clears); a target that was there is recorded once this volume is
    // mounted on it (bindMount refuses anything else mounted there), so a record always means
    // "this volume, published here by this plugin".
    if (!target.exists) await this.publications.put({ ...record, created: true });
    await prepareMountTarget({ path: o.targetPath, kind });
    await bindMount({ source, target: o.targetPath, readOnly: o.readOnly });
    if (target.exists) await this.publications.put({ ...record, created: earlier?.created ?? false });
  }

  /**
   * CSI spec, NodeUnpublishVolume: the SP "MUST delete the file or directory it created at this
   * path", and a call for a volume that is not published there succeeds. So only a volume this
   * plugin published at the path is unmounted and only what it created there is removed. Without a
   * record (an unknown volume, another volume's target, a publication recorded nowhere) the one
   * thing done is unmounting a mount of this very volume's device; nothing is ever removed.
   */
  async unpublish(o: NodeUnpublishOptions): Promise<void> {
    await this.checkPath(o.targetPath, "target_path");
    const record = await this.publications.get(o.targetPath);
    if (record?.engineName !== o.engineName) {
      if (await this.isMountOf(o.engineName, o.targetPath)) await unmount(o.targetPath);
      return;
    }
    await unmount(o.targetPath);
    if (record.created) {
      const removal = await removeMountTarget(o.targetPath);
      if (removal.kept !== undefined) {
        this.options.logger.warn("left the publish target in place: it is not as the plugin made it", {
          volumeId: o.volumeId,
          reason: removal.kept,
        });
      }
    }
    await this.publications.remove(o.targetPath);
  }

  /** Whether a mount at `p` is of this volume's device (its filesystem, or a bind of its device node). */
  private async isMountOf(engineName: string, p: string): Promise<boolean> {
    const attachment = await this.options.dataPlane.find(engineName);
    if (attachment?.devicePath === undefined || !(await isMountPoint(p))) return false;
    try {
      const mounts = await findMountsOfDevice(attachment.devicePath);
      return [...mounts.filesystemMounts, ...mounts.nodeBindMounts].some((m) => m.mountPoint === p);
    } catch (err) {
      // The device is gone (a broken attachment): nothing mounted here can be shown to be its.
      if (isSnapblockError(err, "NOT_FOUND")) return false;
      throw err;
    }
  }

  async stats(o: NodeStatsOptions): Promise<NodeVolumeStats> {
    let stat;
    try {
      stat = await fs.stat(o.volumePath);
    } catch (err) {
      throw new SnapblockError("NOT_FOUND", `volume_path ${o.volumePath} does not exist`, { cause: err });
    }
    const attachment = await requireVolumeAt(
      await this.options.dataPlane.find(o.engineName, { probeIo: true }),
      o,
    );
    const condition =
      attachment.health === "ok"
        ? { abnormal: false, message: "volume is attached and answers I/O" }
        : {
            abnormal: true,
            message: `the volume's block device is broken: ${attachment.problems.join("; ")}; unstage and stage it again`,
          };
    if (stat.isBlockDevice()) {
      const total = await blockDeviceSize(o.volumePath);
      return { usage: [{ unit: "BYTES", total, used: 0, available: 0 }], condition };
    }
    const fsStats = await volumeStats(o.volumePath);
    return {
      usage: [
        {
          unit: "BYTES",
          total: fsStats.totalBytes,
          used: fsStats.usedBytes,
          available: fsStats.availableBytes,
        },
        {
          unit: "INODES",
          total: fsStats.totalInodes,
          used: fsStats.usedInodes,
          available: fsStats.freeInodes,
        },
      ],
      condition,
    };
  }

  async expand(o: NodeExpandOptions): Promise<{ capacityBytes: number }> {
    await this.checkPath(o.volumePath, "volume_path");
    if (o.stagingPath !== undefined) await this.checkPath(o.stagingPath, "staging_target_path");
    const attachment = await this.options.dataPlane.find(o.engineName);
    if (!attachment) throw notStaged(o.volumeId);
    const devicePath = requireDevice(attachment, o.volumeId);
    let size = await this.options.dataPlane.refreshSize(o.engineName);
    if (size < o.sizeBytes) {
      if (!(await this.options.dataPlane.info()).onlineResize) {
        throw new StatusError(
          "FAILED_PRECONDITION",
          `this node attaches volumes through ${attachment.kind}, which cannot resize a device in use; unstage and stage volume ${o.volumeId} again and its filesystem grows then`,
        );
      }
      size = await blockDeviceSize(devicePath);
    }
    const mounted = o.capability
      ? o.capability.accessType === "mount"
      : o.stagingPath !== undefined && (await isMountPoint(o.stagingPath));
    if (mounted) {
      const mountPath = o.stagingPath ?? o.volumePath;
      const fsType = (await fsTypeAt(mountPath)) ?? "ext4";
      await growFilesystem({ device: devicePath, mountPath, fsType });
    }
    return { capacityBytes: size };
  }

  /** assertNodePath against the node's roots: before anything is done at a path the CO gave. */
  private checkPath(p: string, what: string, kind?: "directory" | "file"): Promise<{ exists: boolean }> {
    return assertNodePath({ path: p, roots: this.options.pathRoots ?? [], what, ...(kind ? { kind } : {}) });
  }

  /** Nothing to release: the node plugin holds no device, export or handle (data-plane.ts). */
  close(): Promise<void> {
    return Promise.resolve();
  }
}

function requireDevice(attachment: Attachment, volumeId: string): string {
  if (attachment.devicePath === undefined || attachment.health !== "ok") {
    throw new SnapblockError(
      "IO",
      `the block device of volume ${volumeId} is broken: ${attachment.problems.join("; ")}; unstage and stage it again`,
    );
  }
  return attachment.devicePath;
}

/**
 * CSI spec, NodeGetVolumeStats errors: "Volume does not exist | 5 NOT_FOUND | Indicates that a
 * volume corresponding to the specified volume_id does not exist on specified volume_path". The
 * path must be a mount of the volume's device: its filesystem (staging path, or a bind of it at a
 * target) or a bind of the device node (raw block target). Answers the attachment.
 */
async function requireVolumeAt(attachment: Attachment | undefined, o: NodeStatsOptions): Promise<Attachment> {
  const notHere = (why: string) =>
    new SnapblockError("NOT_FOUND", `volume ${o.volumeId} is not at volume_path ${o.volumePath}: ${why}`);
  if (attachment === undefined) throw notHere("it is not staged on this node");
  let mounts;
  try {
    mounts =
      attachment.devicePath === undefined ? undefined : await findMountsOfDevice(attachment.devicePath);
  } catch (err) {
    if (!isSnapblockError(err, "NOT_FOUND")) throw err;
  }
  if (mounts === undefined) {
    // A broken attachment whose device is gone: the mount left behind is all there is to check,
    // and the volume condition then says what broke.
    if (await isMountPoint(o.volumePath)) return attachment;
    throw notHere("nothing is mounted there");
  }
  const at = [...mounts.filesystemMounts, ...mounts.nodeBindMounts].map((m) => m.mountPoint);
  if (at.includes(o.volumePath) || at.includes(await fs.realpath(o.volumePath))) return attachment;
  throw notHere(`its device ${attachment.devicePath} is not mounted there`);
}

function notStaged(volumeId: string): StatusError {
  return new StatusError(
    "FAILED_PRECONDITION",
    `volume ${volumeId} is not staged on this node; call NodeStageVolume first`,
  );
}

async function fsTypeAt(mountPath: string): Promise<"ext4" | "xfs" | undefined> {
  const mount = await findMount(mountPath);
  return mount?.fsType === "ext4" || mount?.fsType === "xfs" ? mount.fsType : undefined;
}
