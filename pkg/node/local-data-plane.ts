import { createHash } from "node:crypto";
import { promises as fs } from "node:fs";
import path from "node:path";
import { KeyedMutex, type Attachment, type BlockAttacher, type FindOptions } from "../attach/index.js";
import { SnapblockError, StatusError, isSnapblockError } from "../errors/index.js";
import type {
  AttachmentHealthSource,
  EngineMeta,
  VolumeDevice,
  VolumeQuiescer,
} from "../engine-api/index.js";
import { PARAM_FREEZE } from "../csi/index.js";
import type { Logger } from "../log/index.js";
import { findMountsOfDevice, withFrozenFilesystem } from "../mount/index.js";
import type { NbdServer } from "../nbd/index.js";
import type { DataPlaneInfo, DataPlaneVolume, NodeDataPlane, VolumeAttachmentFacts } from "./data-plane.js";
import { socketPathFor } from "./socket-path.js";
import { VolumeClaims } from "./volume-claims.js";

/** What the data plane needs from the pool. */
export interface DataPlanePool {
  readonly nodeId: string;
  isReady(): boolean;
  openVolumeDevice(engineName: string): VolumeDevice;
  getVolume(name: string): Promise<DataPlaneVolume | undefined>;
  updateVolumeMeta(name: string, patch: EngineMeta): Promise<unknown>;
}

export interface LocalDataPlaneOptions {
  pool: DataPlanePool;
  /** The node's NBD server (pkg/nbd); the node path's exports listen on unix sockets in socketDir. */
  nbd: NbdServer;
  /** The node's block attacher (pkg/attach chooseAttacher), or why there is none here. */
  attacher: BlockAttacher | { unavailable: string };
  /** Directory of the export sockets (created 0700). */
  socketDir: string;
  /** Shared with the NBD exports for people (user-exports.ts): one user of a volume at a time. */
  claims?: VolumeClaims;
  logger: Logger;
  /** Bounds of a filesystem freeze for a snapshot (defaults: 30 s to freeze, 10 s frozen). */
  freeze?: { freezeTimeoutMs?: number; holdMs?: number };
}

/**
 * The data plane of a node, in the process that owns the pool (docs/node-attach.md, "How a
 * volume reaches a pod"): the volume is exported by pkg/nbd on a unix socket and attached as a
 * kernel block device by pkg/attach. The block devices live as long as this process (nbdfuse
 * processes are its children) or longer (nbd-client connections are the kernel's). It is also the
 * engine's quiescer: a snapshot freezes the filesystem staged from the volume's device, found in
 * the mount table, because this process is the one that takes snapshots and is always there when
 * one is taken (the node plugin may be restarting).
 */
export class LocalDataPlane implements NodeDataPlane, VolumeQuiescer, AttachmentHealthSource {
  private readonly devices = new Map<string, VolumeDevice>();
  /** The broken attachments at the last look (watchHealth), by engine name: why each is broken. */
  private broken = new Map<string, string>();
  private healthTimer: NodeJS.Timeout | undefined;
  private readonly claims: VolumeClaims;
  /** Per volume: a snapshot's freeze and the node plugin's exclusive sections never interleave. */
  private readonly serial = new KeyedMutex();

  constructor(private readonly options: LocalDataPlaneOptions) {
    this.claims = options.claims ?? new VolumeClaims();
  }

  info(): Promise<DataPlaneInfo> {
    const a = this.options.attacher;
    const available = "kind" in a;
    return Promise.resolve({
      nodeId: this.options.pool.nodeId,
      attacherKind: available ? a.kind : undefined,
      onlineResize: available ? a.onlineResize : false,
      ready: this.options.pool.isReady(),
      reason: available ? "" : a.unavailable,
    });
  }

  async getVolume(engineName: string): Promise<DataPlaneVolume | undefined> {
    const v = await this.options.pool.getVolume(engineName);
    return v === undefined ? undefined : { name: v.name, sizeBytes: v.sizeBytes, meta: v.meta };
  }

  async updateVolumeMeta(engineName: string, patch: EngineMeta): Promise<void> {
    await this.options.pool.updateVolumeMeta(engineName, patch);
  }

  async attach(o: { engineName: string; label: string }): Promise<Attachment> {
    const attacher = this.attacher();
    const socketPath = await this.ensureExport(o.engineName, o.label);
    const device = this.devices.get(o.engineName)!;
    return attacher.attach({
      key: attachmentKey(o.engineName),
      socketPath,
      exportName: o.engineName,
      readOnly: false,
      sizeBytes: device.size,
    });
  }

  async detach(engineName: string): Promise<void> {
    await this.attacher().detach(attachmentKey(engineName));
    await this.stopExport(engineName);
  }

  find(engineName: string, options?: FindOptions): Promise<Attachment | undefined> {
    const a = this.options.attacher;
    return "kind" in a ? a.find(attachmentKey(engineName), options) : Promise.resolve(undefined);
  }

  refreshSize(engineName: string): Promise<number> {
    return this.attacher().refreshSize(attachmentKey(engineName));
  }

  exclusive<T>(engineName: string, fn: () => Promise<T>): Promise<T> {
    return this.serial.run(engineName, fn);
  }

  /** AttachmentHealthSource: what the last look found (the engine's volumes carry it to the controller). */
  attachmentProblem(engineName: string): string | undefined {
    return this.broken.get(engineName);
  }

  /**
   * Looks at every attachment now and then every intervalMs (I/O probe included), so that a
   * device that broke says so within seconds in the engine's volumes (ControllerGetVolume), and
   * in the log once, with what to do.
   */
  async watchHealth(intervalMs = 3000): Promise<void> {
    await this.lookAtHealth();
    this.healthTimer = setInterval(() => void this.lookAtHealth(), intervalMs);
    this.healthTimer.unref();
  }

  private async lookAtHealth(): Promise<void> {
    await this.noteAlive();
    let all;
    try {
      all = await this.attachments();
    } catch (err) {
      this.options.logger.warn("cannot look at the health of the node's block devices", { err });
      return;
    }
    const now = new Map(
      all.filter((a) => a.health === "broken").map((a) => [a.engineName, a.problems.join("; ")]),
    );
    for (const [name, why] of now) {
      if (!this.broken.has(name))
        this.options.logger.warn(
          "a staged volume's block device is broken: I/O on it fails; unpublish and unstage it, then stage and publish it again (Kubernetes: delete the pods using it)",
          { volume: name, problems: why },
        );
    }
    this.broken = now;
  }

  /** Every volume attached on this node, with its device's health and mounts (for `volume list`). */
  async attachments(): Promise<VolumeAttachmentFacts[]> {
    const a = this.options.attacher;
    if (!("kind" in a)) return [];
    const out: VolumeAttachmentFacts[] = [];
    for (const listed of await a.list()) {
      // list() checks processes and devices; an NBD connection that died with the server that
      // served it (a restart of the data plane) shows only on I/O: probe it, as
      // NodeGetVolumeStats does, so that the state says "broken" when I/O would fail.
      const found =
        listed.health === "ok" ? ((await a.find(listed.key, { probeIo: true })) ?? listed) : listed;
      const facts: VolumeAttachmentFacts = {
        engineName: found.exportName,
        health: found.health,
        problems: [...found.problems],
        filesystemMounts: [],
        deviceBindMounts: [],
      };
      if (found.devicePath !== undefined) facts.devicePath = found.devicePath;
      if (found.devicePath !== undefined && found.health === "ok") {
        const mounts = await findMountsOfDevice(found.devicePath);
        facts.filesystemMounts = mounts.filesystemMounts.map((m) => m.mountPoint);
        facts.deviceBindMounts = mounts.nodeBindMounts.map((m) => m.mountPoint);
      }
      out.push(facts);
    }
    return out;
  }

  /**
   * After a restart of the data plane: serve again the exports of the attachments recorded on this
   * node, so that their devices can reconnect (kernel nbd through the netlink helper: reconnected
   * here) or be re-attached by the node plugin's next stage. A device whose NBD connection died
   * with the old process and cannot be reconnected is logged as broken, with what to do;
   * NodeGetVolumeStats and `volume list` say the same.
   */
  async resume(): Promise<void> {
    const a = this.options.attacher;
    if (!("kind" in a)) return;
    const awayMs = await this.awayMs();
    for (const attachment of await a.list()) {
      try {
        await this.ensureExport(attachment.exportName);
        if (a.reconnect !== undefined) {
          const result = await a.reconnect(attachment.key, awayMs === undefined ? {} : { awayMs });
          if (result.reconnected)
            this.options.logger.info("reconnected a staged volume's kernel nbd device after restart", {
              volume: attachment.exportName,
              detail: result.message,
            });
        }
        const now = (await a.find(attachment.key, { probeIo: true })) ?? attachment;
        if (now.health === "ok") {
          this.options.logger.info("re-exported a staged volume after restart; its device answers I/O", {
            volume: now.exportName,
          });
        } else {
          this.broken.set(now.exportName, now.problems.join("; "));
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

  /**
   * The heartbeat: the modification time of ALIVE_FILE in socketDir, set at every look at health
   * (every few seconds), tells the next data plane how long this one has been gone - which says
   * whether kernel nbd devices waited longer than their dead-connection timeout, so that I/O on
   * them failed meanwhile. Not fsynced: a heartbeat lost to a power cut only makes the next start
   * think the gap was longer (stricter), never shorter.
   */
  private async noteAlive(): Promise<void> {
    const file = path.join(this.options.socketDir, ALIVE_FILE);
    const now = new Date();
    try {
      await fs.utimes(file, now, now);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") return;
      await fs.mkdir(this.options.socketDir, { recursive: true, mode: 0o700 }).catch(() => undefined);
      await fs.writeFile(file, "", { mode: 0o600 }).catch(() => undefined);
    }
  }

  /** How long ago the previous data plane last noted it was alive, or undefined when unknown. */
  private async awayMs(): Promise<number | undefined> {
    try {
      const stat = await fs.stat(path.join(this.options.socketDir, ALIVE_FILE));
      return Math.max(0, Date.now() - stat.mtimeMs);
    } catch {
      return undefined;
    }
  }

  /**
   * VolumeQuiescer, called by LocalEngine around a snapshot: a volume staged with a writable
   * filesystem is frozen (FIFREEZE) while fn runs and thawed after, always; raw block, read-only
   * and unstaged volumes run fn as they are. Serialized with the node plugin's exclusive
   * sections (its unmounts).
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
    const attachment = await this.find(engineName);
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

  /** Releases the volume handles; call after the NBD server has shut down (it flushes them). */
  close(): Promise<void> {
    clearInterval(this.healthTimer);
    for (const [name, device] of this.devices) {
      device.close();
      this.devices.delete(name);
    }
    return Promise.resolve();
  }

  private attacher(): BlockAttacher {
    const a = this.options.attacher;
    if ("kind" in a) return a;
    throw new StatusError("UNIMPLEMENTED", `no block devices can be attached on this node: ${a.unavailable}`);
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
      device = this.options.pool.openVolumeDevice(engineName);
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

/** The heartbeat file in socketDir (noteAlive). */
const ALIVE_FILE = "dataplane.alive";

/** pkg/attach keys: [A-Za-z0-9._-]{1,128}; engine names of CSI volumes always fit. */
function attachmentKey(engineName: string): string {
  return engineName.length <= 128
    ? engineName
    : `h--${createHash("sha256").update(engineName).digest("hex").slice(0, 40)}`;
}
