import { createHash } from "node:crypto";
import { promises as fs } from "node:fs";
import { KeyedMutex, type Attachment, type BlockAttacher } from "../attach/index.js";
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
  withFrozenFilesystem,
} from "../mount/index.js";
import type { NbdServer } from "../nbd/index.js";
import {
  PARAM_FREEZE,
  type NodeExpandOptions,
  type NodePublishOptions,
  type NodeStageOptions,
  type NodeStatsOptions,
  type NodeUnpublishOptions,
  type NodeUnstageOptions,
  type NodeVolumeManager,
  type NodeVolumeStats,
} from "../csi/index.js";
import type { Logger } from "../log/index.js";
import type { VolumeDevice, VolumeQuiescer } from "../engine-api/index.js";
import { PublicationStore } from "./publications.js";
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
  /** Directory of the records of what was published where (publications.ts; created 0700). */
  publicationDir: string;
  /**
   * When set, every staging and target path must resolve, symbolic links followed, strictly
   * inside one of these directories (the node's --path-root).
   */
  pathRoots?: readonly string[];
  /** Shared with the NBD exports for people (user-exports.ts): one user of a volume at a time. */
  claims?: VolumeClaims;
  logger: Logger;
  /** Bounds of a filesystem freeze for a snapshot (defaults: 30 s to freeze, 10 s frozen). */
  freeze?: { freezeTimeoutMs?: number; holdMs?: number };
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
export class NbdNodeVolumes implements NodeVolumeManager, VolumeQuiescer {
  private readonly devices = new Map<string, VolumeDevice>();
  private readonly claims: VolumeClaims;
  /** Per volume: stage, unstage and a snapshot's freeze never interleave (see quiesce). */
  private readonly serial = new KeyedMutex();
  private readonly publications: PublicationStore;

  constructor(private readonly options: NbdNodeVolumesOptions) {
    this.claims = options.claims ?? new VolumeClaims();
    this.publications = new PublicationStore(options.publicationDir);
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
        // Served again; whether its device reconnected shows only on I/O (nbdfuse cannot reconnect
        // to a new server): probe it, so that the log says what NodeGetVolumeStats will say.
        const now = (await this.options.attacher.find(attachment.key, { probeIo: true })) ?? attachment;
        if (now.health === "ok") {
          this.options.logger.info("re-exported a staged volume after restart; its device answers I/O", {
            volume: now.exportName,
          });
        } else {
          this.options.logger.warn(
            "a staged volume's block device is broken after the restart: unstage and stage it again (Kubernetes: restart the pods using it)",
            { volume: now.exportName, problems: now.problems },
          );
        }
      } catch (err) {
        this.options.logger.warn("cannot re-export a staged volume", { volume: attachment.exportName, err });
      }
    }
  }

  stage(o: NodeStageOptions): Promise<void> {
    return this.serial.run(o.engineName, () => this.stageNow(o));
  }

  private async stageNow(o: NodeStageOptions): Promise<void> {
    // Every path checked before anything is exported, attached or formatted (CSI: the CO creates
    // the staging directory).
    await this.checkPath(o.stagingPath, "staging_target_path", "directory");
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

  unstage(o: NodeUnstageOptions): Promise<void> {
    return this.serial.run(o.engineName, () => this.unstageNow(o));
  }

  private async unstageNow(o: NodeUnstageOptions): Promise<void> {
    await this.checkPath(o.stagingPath, "staging_target_path");
    await unmount(o.stagingPath);
    await this.options.attacher.detach(attachmentKey(o.engineName));
    await this.stopExport(o.engineName);
  }

  async publish(o: NodePublishOptions): Promise<void> {
    const kind = o.capability.accessType === "block" ? "file" : "directory";
    const target = await this.checkPath(o.targetPath, "target_path", kind);
    await this.checkPath(o.stagingPath, "staging_target_path");
    let source: string;
    if (o.capability.accessType === "block") {
      const attachment = await this.options.attacher.find(attachmentKey(o.engineName));
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
    const attachment = await this.options.attacher.find(attachmentKey(engineName));
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
      await this.options.attacher.find(attachmentKey(o.engineName), { probeIo: true }),
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

  /**
   * VolumeQuiescer, called by LocalEngine around a snapshot: a volume staged here with a writable
   * filesystem is frozen (FIFREEZE) while fn runs and thawed after, always; raw block, read-only
   * and unstaged volumes run fn as they are. Serialized with stage and unstage of the volume: a
   * filesystem unmounted while frozen could not be thawed through its mount any more.
   */
  quiesce<T>(engineName: string, fn: () => Promise<T>): Promise<T> {
    return this.serial.run(engineName, async () => {
      const mountPoint = await this.writableMountOf(engineName);
      if (mountPoint === undefined) return fn();
      let fnFailed = false;
      const tracked = () =>
        fn().catch((err: unknown) => {
          fnFailed = true;
          throw err;
        });
      try {
        const frozen = await withFrozenFilesystem(
          {
            mountPoint,
            ...this.options.freeze,
            onBackgroundEvent: (message, fields) =>
              this.options.logger.warn(message, { volume: engineName, ...fields }),
          },
          tracked,
        );
        this.options.logger.info("froze the filesystem for a snapshot", {
          volume: engineName,
          mountPoint,
          freezeMs: Math.round(frozen.freezeMs),
          frozenMs: Math.round(frozen.frozenMs),
        });
        return frozen.value;
      } catch (err) {
        if (fnFailed || !isSnapblockError(err)) throw err;
        throw new SnapblockError(
          err.code,
          `the snapshot of volume ${engineName} needs its filesystem (staged at ${mountPoint}) frozen: ${err.message}; no snapshot was kept. Retry, or snapshot without freezing (VolumeSnapshotClass parameter ${PARAM_FREEZE}: "false")`,
          { cause: err },
        );
      }
    });
  }

  /** The writable mount of the volume's filesystem here, or undefined (raw block, not staged...). */
  private async writableMountOf(engineName: string): Promise<string | undefined> {
    const attachment = await this.options.attacher.find(attachmentKey(engineName));
    if (attachment?.devicePath === undefined) return undefined;
    if (attachment.health !== "ok") {
      // Nothing reaches the pool through a broken device: the pool's blocks are as still as a
      // freeze would make them, and a freeze could only hang on the dead device.
      this.options.logger.warn("snapshot without freezing: the volume's block device is broken", {
        volume: engineName,
        problems: attachment.problems,
      });
      return undefined;
    }
    const mounts = await findMountsOfDevice(attachment.devicePath);
    return mounts.filesystemMounts.find((m) => m.mountOptions.includes("rw"))?.mountPoint;
  }

  /** assertNodePath against the node's roots: before anything is done at a path the CO gave. */
  private checkPath(p: string, what: string, kind?: "directory" | "file"): Promise<{ exists: boolean }> {
    return assertNodePath({ path: p, roots: this.options.pathRoots ?? [], what, ...(kind ? { kind } : {}) });
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
