import { createHash } from "node:crypto";
import { promises as fs } from "node:fs";
import type { Attachment, BlockAttacher } from "../attach/index.js";
import { SnapblockError, isSnapblockError, StatusError } from "../errors/index.js";
import {
  blockDeviceSize,
  bindMount,
  ensureFilesystem,
  findMount,
  findMountsOfDevice,
  growFilesystem,
  isMountPoint,
  mountFilesystem,
  prepareMountTarget,
  unmount,
  volumeStats,
} from "../mount/index.js";
import type { NbdServer } from "../nbd/index.js";
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
import type { VolumeDevice } from "../engine-api/index.js";
import { socketPathFor } from "./socket-path.js";
import { VolumeClaims } from "./volume-claims.js";

/** What the node data path needs from the pool: read-write handles on volumes. */
export interface VolumeOpener {
  openVolumeDevice(engineName: string): VolumeDevice;
}

export interface NbdNodeVolumesOptions {
  volumes: VolumeOpener;
  /** The node's NBD server (pkg/nbd); exports listen on unix sockets in socketDir. */
  nbd: NbdServer;
  /** The node's block attacher (pkg/attach chooseAttacher). */
  attacher: BlockAttacher;
  /** Directory of the export sockets (created 0700). */
  socketDir: string;
  /** Shared with the NBD exports for people (user-exports.ts): one user of a volume at a time. */
  claims?: VolumeClaims;
  logger: Logger;
}

/** What the block path holds for one volume: its device and who mounts it (pkg/operator reads it). */
export interface VolumeAttachmentFacts {
  engineName: string;
  health: "ok" | "broken";
  /** Why it is broken, one sentence each. */
  problems: string[];
  devicePath?: string;
  /** Filesystems mounted from the device: the staging mount and its bind mounts. */
  filesystemMounts: string[];
  /** Bind mounts of the device node (raw block volumes published). */
  deviceBindMounts: string[];
}

/**
 * The node data path (docs/node-attach.md, "How a volume reaches a pod"): the volume is exported
 * by pkg/nbd on a unix socket, attached as a kernel block device by pkg/attach, given a
 * filesystem on first use and mounted at the staging path by pkg/mount, then bind-mounted into
 * the pod. Every step is idempotent, so a retried call picks up where a failed one stopped.
 */
export class NbdNodeVolumes implements NodeVolumeManager {
  private readonly devices = new Map<string, VolumeDevice>();
  private readonly claims: VolumeClaims;

  constructor(private readonly options: NbdNodeVolumesOptions) {
    this.claims = options.claims ?? new VolumeClaims();
  }

  /** Every volume attached on this node, with its device's health and mounts (for `volume list`). */
  async attachments(): Promise<VolumeAttachmentFacts[]> {
    const out: VolumeAttachmentFacts[] = [];
    for (const listed of await this.options.attacher.list()) {
      // list() checks processes and devices; an NBD connection that died with the server that
      // served it (a restart of this process) shows only on I/O: probe it, as
      // NodeGetVolumeStats does, so that the state says "broken" when I/O would fail.
      const a =
        listed.health === "ok"
          ? ((await this.options.attacher.find(listed.key, { probeIo: true })) ?? listed)
          : listed;
      const facts: VolumeAttachmentFacts = {
        engineName: a.exportName,
        health: a.health,
        problems: [...a.problems],
        filesystemMounts: [],
        deviceBindMounts: [],
      };
      if (a.devicePath !== undefined) facts.devicePath = a.devicePath;
      if (a.devicePath !== undefined && a.health === "ok") {
        const mounts = await findMountsOfDevice(a.devicePath);
        facts.filesystemMounts = mounts.filesystemMounts.map((m) => m.mountPoint);
        facts.deviceBindMounts = mounts.nodeBindMounts.map((m) => m.mountPoint);
      }
      out.push(facts);
    }
    return out;
  }

  /**
   * After a restart: serve again the exports of the attachments recorded on this node, so that
   * their devices can reconnect (or be re-attached by a new NodeStageVolume). Attachments whose
   * NBD connection died with the old process are reported as broken by NodeGetVolumeStats.
   */
  async resume(): Promise<void> {
    for (const attachment of await this.options.attacher.list()) {
      try {
        await this.ensureExport(attachment.exportName);
        this.options.logger.info("re-exported a staged volume after restart", {
          volume: attachment.exportName,
          health: attachment.health,
          problems: attachment.problems,
        });
      } catch (err) {
        this.options.logger.warn("cannot re-export a staged volume", { volume: attachment.exportName, err });
      }
    }
  }

  async stage(o: NodeStageOptions): Promise<void> {
    const key = attachmentKey(o.engineName);
    const attachedBefore = (await this.options.attacher.find(key)) !== undefined;
    const socketPath = await this.ensureExport(o.engineName, o.volumeId);
    const device = this.devices.get(o.engineName)!;
    const attachment = await this.options.attacher.attach({
      key,
      socketPath,
      exportName: o.engineName,
      readOnly: false,
      sizeBytes: device.size,
    });
    if (o.capability.accessType === "block") return;
    const devicePath = requireDevice(attachment, o.volumeId);
    const made = await ensureFilesystem({
      device: devicePath,
      fsType: o.fsType,
      formatBlank: o.refuseFormat === undefined,
    });
    if (made === "blank" && o.refuseFormat !== undefined) {
      // Nothing was written: take away what this call attached, so that nothing is left behind.
      if (!attachedBefore) {
        await this.options.attacher.detach(key);
        await this.stopExport(o.engineName);
      }
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
    await unmount(o.stagingPath);
    await this.options.attacher.detach(attachmentKey(o.engineName));
    await this.stopExport(o.engineName);
  }

  async publish(o: NodePublishOptions): Promise<void> {
    if (o.capability.accessType === "block") {
      const attachment = await this.options.attacher.find(attachmentKey(o.engineName));
      if (!attachment) throw notStaged(o.volumeId);
      const devicePath = requireDevice(attachment, o.volumeId);
      await prepareMountTarget({ path: o.targetPath, kind: "file" });
      await bindMount({ source: devicePath, target: o.targetPath, readOnly: o.readOnly });
      return;
    }
    if (!(await isMountPoint(o.stagingPath))) throw notStaged(o.volumeId);
    await prepareMountTarget({ path: o.targetPath, kind: "directory" });
    await bindMount({ source: o.stagingPath, target: o.targetPath, readOnly: o.readOnly });
  }

  async unpublish(o: NodeUnpublishOptions): Promise<void> {
    await unmount(o.targetPath, { removeTarget: true });
  }

  async stats(o: NodeStatsOptions): Promise<NodeVolumeStats> {
    let stat;
    try {
      stat = await fs.stat(o.volumePath);
    } catch (err) {
      throw new SnapblockError("NOT_FOUND", `volume_path ${o.volumePath} does not exist`, { cause: err });
    }
    const attachment = await this.options.attacher.find(attachmentKey(o.engineName), { probeIo: true });
    const condition =
      attachment === undefined
        ? { abnormal: true, message: `volume ${o.volumeId} is not attached on this node (not staged)` }
        : attachment.health === "ok"
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
    const key = attachmentKey(o.engineName);
    const attachment = await this.options.attacher.find(key);
    if (!attachment) throw notStaged(o.volumeId);
    const devicePath = requireDevice(attachment, o.volumeId);
    let size = await this.options.attacher.refreshSize(key);
    if (size < o.sizeBytes) {
      if (!this.options.attacher.onlineResize) {
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

  /** Releases the volume handles; call after the NBD server has shut down (it flushes them). */
  close(): Promise<void> {
    for (const [name, device] of this.devices) {
      device.close();
      this.devices.delete(name);
    }
    return Promise.resolve();
  }

  /** The node path's export of a volume (claimed for it until stopExport); `label` names it in messages. */
  private async ensureExport(engineName: string, label = engineName): Promise<string> {
    this.claims.claim(engineName, "staged", label);
    const existing = this.options.nbd.getExport(engineName);
    if (existing && existing.address.kind === "unix") return existing.address.socketPath;
    let device: VolumeDevice | undefined;
    try {
      await fs.mkdir(this.options.socketDir, { recursive: true, mode: 0o700 });
      const socketPath = socketPathFor(this.options.socketDir, engineName);
      device = this.options.volumes.openVolumeDevice(engineName);
      await this.options.nbd.startExport({
        backend: device,
        listen: { socketPath },
        name: engineName,
        description: `snapblock volume ${engineName}`,
      });
      this.devices.set(engineName, device);
      return socketPath;
    } catch (err) {
      device?.close();
      this.claims.release(engineName, "staged");
      throw err;
    }
  }

  private async stopExport(engineName: string): Promise<void> {
    try {
      await this.options.nbd.stopExport(engineName);
    } catch (err) {
      if (!isSnapblockError(err, "NOT_FOUND")) throw err;
    }
    this.devices.get(engineName)?.close();
    this.devices.delete(engineName);
    this.claims.release(engineName, "staged");
  }
}

/** pkg/attach keys: [A-Za-z0-9._-]{1,128}; engine names of CSI volumes always fit. */
function attachmentKey(engineName: string): string {
  return engineName.length <= 128
    ? engineName
    : `h--${createHash("sha256").update(engineName).digest("hex").slice(0, 40)}`;
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
