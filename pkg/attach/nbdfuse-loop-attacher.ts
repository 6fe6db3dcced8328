/**
 * NBD export -> block device without the kernel nbd module:
 *
 *   NBD socket --(nbdfuse, libnbd)--> FUSE file STATE/KEY.fuse/disk --(loop driver)--> /dev/loopN
 *
 * Everything this attacher makes is named after the key under the state directory, so that
 * detach can find and remove it even when the record is missing or stale (a crash between two
 * steps): the loop device by its backing file, the FUSE mount by its directory, nbdfuse by the
 * file on its command line.
 *
 *   STATE/KEY.json   the record (state-store.ts)
 *   STATE/KEY.fuse/  the FUSE mount point, serving one file, "disk"
 *   STATE/KEY.log    nbdfuse's stdout/stderr
 *   STATE/KEY.pid    nbdfuse's pid file (its readiness signal; removed once read)
 *
 * Limits (docs/node-attach.md): nbdfuse reads the export size once, at connect, so a grown export
 * is not seen until the next attach (no online expansion); nbdfuse cannot reconnect, so if the NBD
 * server restarts, I/O on the device fails until the volume is unstaged and staged again.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { SnapblockError } from "../errors/index.js";
import {
  blockDeviceSize,
  findExecutable,
  findMount,
  runCommand,
  type CommandRunner,
  type MountInfoOptions,
} from "../mount/index.js";
import {
  validateAttachOptions,
  assertAttachmentKey,
  type AttachOptions,
  type Attachment,
  type BlockAttacher,
  type FindOptions,
} from "./attachment.js";
import { deviceUsersCheck, type DeviceUsersCheck } from "./device-users.js";
import { KeyedMutex } from "./keyed-mutex.js";
import {
  attachLoopDevice,
  detachLoopDevice,
  listLoopDevices,
  refreshLoopCapacity,
  type LoopDevice,
} from "./losetup.js";
import { exportUri } from "../nbd/index.js";
import { startNbdfuse } from "./nbdfuse-process.js";
import {
  findProcessesWithArgument,
  isLive,
  readProcess,
  stopProcess,
  type ProcessInfo,
} from "../proc/index.js";
import { AttachmentStateStore, type AttachmentRecord } from "./state-store.js";
import { listAttachments } from "./list-attachments.js";
import { cleanupFailedAttach, recordMatches, toAttachment, assertSocket } from "./attach-steps.js";

export interface NbdfuseLoopAttacherOptions extends MountInfoOptions {
  stateDir: string;
  runner?: CommandRunner;
  /** Default "nbdfuse". */
  nbdfuseCommand?: string;
  /** How long nbdfuse may take to connect and mount. Default 20 s. */
  readyTimeoutMs?: number;
  /**
   * Open the FUSE file with O_DIRECT from the loop driver (default true): without it every block
   * is cached twice (loop device and FUSE file page caches), and writeback under memory pressure
   * has to go through a user-space process, the deadlock nbdfuse(1) warns about.
   */
  directIo?: boolean;
  procRoot?: string;
  sysfsRoot?: string;
  /** Replaces the in-use check (tests). */
  deviceUsers?: DeviceUsersCheck;
}

interface KeyPaths {
  mountDir: string;
  file: string;
  logPath: string;
  pidFile: string;
}

/** nbdfuse exits by itself once its FUSE mount is gone; this is how long we wait before signalling it. */
const NBDFUSE_EXIT_GRACE_MS = 5_000;

export class NbdfuseLoopAttacher implements BlockAttacher {
  readonly kind = "nbdfuse-loop" as const;
  readonly onlineResize = false;
  private readonly store: AttachmentStateStore;
  private readonly run: CommandRunner;
  private readonly locks = new KeyedMutex();
  private readonly deviceUsers: DeviceUsersCheck;

  constructor(private readonly options: NbdfuseLoopAttacherOptions) {
    this.store = new AttachmentStateStore(options.stateDir);
    this.run = options.runner ?? runCommand;
    this.deviceUsers = options.deviceUsers ?? deviceUsersCheck(options);
  }

  async attach(request: AttachOptions): Promise<Attachment> {
    validateAttachOptions(request);
    return this.locks.run(request.key, async () => {
      const existing = await this.store.read(request.key);
      if (existing !== undefined) {
        const current = await this.inspect(existing, {});
        if (current.health === "ok") {
          if (recordMatches(existing, request)) return current;
          throw new SnapblockError(
            "ALREADY_EXISTS",
            `attachment ${request.key} already serves ${existing.exportName} from ${existing.socketPath} ` +
              `(${existing.readOnly ? "ro" : "rw"}); detach it before attaching another export under this key`,
          );
        }
      }
      // A broken or half-made attachment, or leftovers of one whose record never got written.
      await this.teardown(request.key, existing);
      await assertSocket(request.socketPath);
      return this.attachFresh(request);
    });
  }

  async detach(key: string): Promise<void> {
    assertAttachmentKey(key);
    await this.locks.run(key, async () => this.teardown(key, await this.store.read(key)));
  }

  async find(key: string, options: FindOptions = {}): Promise<Attachment | undefined> {
    assertAttachmentKey(key);
    return this.locks.run(key, async () => {
      const record = await this.store.read(key);
      return record === undefined || record.kind !== this.kind ? undefined : this.inspect(record, options);
    });
  }

  list(): Promise<Attachment[]> {
    return listAttachments(this.store, this.kind, (key) => this.find(key));
  }

  /**
   * Re-reads the backing file size into the loop device. Through nbdfuse this does not grow the
   * device: nbdfuse keeps the size it read at connect (see the module comment), so the returned
   * size tells the caller whether the growth arrived.
   */
  async refreshSize(key: string): Promise<number> {
    const attachment = await this.find(key);
    if (attachment?.devicePath === undefined || attachment.health !== "ok") {
      throw new SnapblockError("NOT_FOUND", `no healthy attachment ${key} to resize`);
    }
    await refreshLoopCapacity(attachment.devicePath, this.run);
    return blockDeviceSize(attachment.devicePath, this.options);
  }

  private paths(key: string): KeyPaths {
    const base = path.join(this.store.stateDir, key);
    return {
      mountDir: `${base}.fuse`,
      file: path.join(`${base}.fuse`, "disk"),
      logPath: `${base}.log`,
      pidFile: `${base}.pid`,
    };
  }

  private async attachFresh(request: AttachOptions): Promise<Attachment> {
    const p = this.paths(request.key);
    const record: AttachmentRecord = {
      version: 1,
      key: request.key,
      kind: this.kind,
      socketPath: request.socketPath,
      exportName: request.exportName,
      readOnly: request.readOnly,
      expectedSizeBytes: request.sizeBytes,
      phase: "attaching",
      createdAt: new Date().toISOString(),
      nbdfuse: { mountDir: p.mountDir, file: p.file, logPath: p.logPath },
    };
    await this.store.write(record);
    try {
      await fs.mkdir(p.mountDir, { mode: 0o700 });
      await fs.rm(p.pidFile, { force: true });
      await startNbdfuse({
        ...this.options,
        command: this.options.nbdfuseCommand ?? "nbdfuse",
        file: p.file,
        uri: exportUri({ kind: "unix", socketPath: request.socketPath }, request.exportName),
        readOnly: request.readOnly,
        pidFile: p.pidFile,
        logPath: p.logPath,
        readyTimeoutMs: this.options.readyTimeoutMs ?? 20_000,
        onSpawn: async (pid) => {
          record.nbdfuse = { ...p, pid };
          await this.store.write(record);
        },
      });
      await fs.rm(p.pidFile, { force: true });
      const fileSize = (await fs.stat(p.file)).size;
      if (fileSize < request.sizeBytes) {
        throw new SnapblockError(
          "OUT_OF_RANGE",
          `export ${request.exportName} is ${fileSize} bytes, smaller than the expected ${request.sizeBytes}`,
        );
      }
      record.devicePath = await attachLoopDevice({
        file: p.file,
        readOnly: request.readOnly,
        directIo: this.options.directIo ?? true,
        run: this.run,
      });
      record.phase = "attached";
      await this.store.write(record);
    } catch (err) {
      throw await cleanupFailedAttach(err, () => this.teardown(request.key, record));
    }
    return this.inspect(record, {});
  }

  /** Removes everything made for `key`, in the reverse order of attach; each step is a no-op if already done. */
  private async teardown(key: string, record: AttachmentRecord | undefined): Promise<void> {
    const p = this.paths(key);
    const loops = await this.loopsOver(p.file);
    for (const loop of loops) {
      const users = await this.deviceUsers(loop.name);
      if (users.length > 0) {
        throw new SnapblockError(
          "BUSY",
          `${loop.name} (attachment ${key}) is still in use: ${users.join("; ")}; unmount it before detaching`,
        );
      }
    }
    for (const loop of loops) await detachLoopDevice(loop.name, this.run);
    // A device held open for an instant (blkid, udev, the kernel re-reading a partition table)
    // only gets autoclear from LOOP_CLR_FD and goes away when the holder closes it: wait for
    // that briefly rather than failing a detach over a transient opener.
    let remaining = await this.loopsOver(p.file);
    for (let i = 0; i < 50 && remaining.length > 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      remaining = await this.loopsOver(p.file);
    }
    if (remaining.length > 0) {
      // LOOP_CLR_FD on a device some process still has open only sets autoclear.
      throw new SnapblockError(
        "BUSY",
        `${remaining.map((l) => l.name).join(", ")} (attachment ${key}) is still open by a process; ` +
          "it will be released when that process closes it; try again later",
      );
    }
    if ((await findMount(p.mountDir, this.options)) !== undefined) await this.unmountFuse(p.mountDir);
    await this.stopNbdfuse(p, record?.nbdfuse?.pid);
    await removeIfPresent(p.mountDir, "directory");
    await removeIfPresent(p.pidFile, "file");
    await removeIfPresent(p.logPath, "file");
    await this.store.remove(key);
  }

  private async loopsOver(file: string): Promise<LoopDevice[]> {
    return (await listLoopDevices(this.run)).filter((loop) => loop.backFile === file);
  }

  private async unmountFuse(mountDir: string): Promise<void> {
    // fusermount3 is FUSE's own unmounter; umount(8) does the same for root and is always there.
    const tool = (await findExecutable("fusermount3")) !== undefined ? "fusermount3" : undefined;
    try {
      if (tool !== undefined) await this.run({ command: tool, args: ["-u", mountDir], timeoutMs: 30_000 });
      else await this.run({ command: "umount", args: ["--", mountDir], timeoutMs: 30_000 });
    } catch (err) {
      if ((await findMount(mountDir, this.options)) === undefined) return; // gone meanwhile: fine
      throw new SnapblockError(
        "BUSY",
        `could not unmount the FUSE mount ${mountDir}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }

  private async stopNbdfuse(p: KeyPaths, recordedPid: number | undefined): Promise<void> {
    const isOurs = (info: ProcessInfo) => info.argv.includes(p.file);
    const pids = new Set(
      (await findProcessesWithArgument(p.file, this.procOptions())).map((info) => info.pid),
    );
    if (recordedPid !== undefined) pids.add(recordedPid);
    for (const pid of pids) {
      await stopProcess({ pid, isOurs, graceMs: NBDFUSE_EXIT_GRACE_MS, procOptions: this.procOptions() });
    }
  }

  private procOptions() {
    return this.options.procRoot === undefined ? {} : { procRoot: this.options.procRoot };
  }

  /** Checks the record against the system and reports what is missing. */
  private async inspect(record: AttachmentRecord, options: FindOptions): Promise<Attachment> {
    const p = this.paths(record.key);
    const problems: string[] = [];
    if (record.phase !== "attached") problems.push("the attach was interrupted before the device was ready");
    const loops = await this.loopsOver(p.file);
    let devicePath = record.devicePath;
    const loop = loops.find((l) => l.name === devicePath) ?? loops[0];
    if (loop === undefined) {
      if (record.phase === "attached") problems.push(`no loop device is bound to ${p.file} any more`);
      devicePath = undefined;
    } else {
      if (loop.name !== devicePath && record.phase === "attached") {
        // Re-discovered under another name (the record is older than the device): trust the kernel.
        devicePath = loop.name;
        await this.store.write({ ...record, devicePath });
      }
      if (loop.backFileDeleted) problems.push(`the FUSE file behind ${loop.name} is gone`);
      if (loop.readOnly !== record.readOnly)
        problems.push(`${loop.name} is ${loop.readOnly ? "read-only" : "writable"}`);
    }
    const pid = record.nbdfuse?.pid;
    const info = pid === undefined ? undefined : await readProcess(pid, this.procOptions());
    if (!isLive(info) || !info.argv.includes(p.file)) {
      problems.push(`nbdfuse (pid ${pid ?? "unknown"}) is not running`);
    }
    if ((await findMount(p.mountDir, this.options)) === undefined)
      problems.push(`${p.mountDir} is not mounted`);
    if (options.probeIo === true && problems.length === 0) {
      const failure = await this.probeRead(p.file);
      if (failure !== undefined) problems.push(failure);
    }
    const sizeBytes =
      devicePath !== undefined && loop !== undefined ? await blockDeviceSize(devicePath, this.options) : 0;
    return toAttachment(record, { devicePath, sizeBytes, problems, pid });
  }

  /** One direct read through nbdfuse to the server, in a child process so that a hung server cannot hang us. */
  private async probeRead(file: string): Promise<string | undefined> {
    try {
      await this.run({
        command: "dd",
        args: [`if=${file}`, "of=/dev/null", "bs=4096", "count=1", "iflag=direct", "status=none"],
        timeoutMs: 10_000,
      });
      return undefined;
    } catch (err) {
      return `a read through nbdfuse failed: ${(err as Error).message}`;
    }
  }
}

async function removeIfPresent(target: string, kind: "file" | "directory"): Promise<void> {
  try {
    if (kind === "directory") await fs.rmdir(target);
    else await fs.unlink(target);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw new SnapblockError("IO", `could not remove ${target}: ${(err as Error).message}`, { cause: err });
  }
}

/** Whether this machine can use the nbdfuse + loop path; returns what is missing. */
export async function nbdfuseLoopMissing(
  options: {
    nbdfuseCommand?: string;
    devFuse?: string;
    findProgram?: (name: string) => Promise<string | undefined>;
  } = {},
): Promise<string[]> {
  const find = options.findProgram ?? ((name: string) => findExecutable(name));
  const missing: string[] = [];
  if ((await find(options.nbdfuseCommand ?? "nbdfuse")) === undefined)
    missing.push("nbdfuse (Debian: libnbd-bin)");
  if ((await find("losetup")) === undefined) missing.push("losetup (Debian: mount)");
  try {
    await fs.access(options.devFuse ?? "/dev/fuse");
  } catch (err) {
    missing.push(`/dev/fuse (${(err as Error).message}; the fuse module, and the device in the container)`);
  }
  return missing;
}
