/**
 * NBD export -> /dev/nbdN through the kernel nbd driver and nbd-client(8) (Debian: nbd-client),
 * the fast path on nodes whose kernel has the nbd module.
 *
 * The kernel keeps the connection once nbd-client has handed it over (netlink mode, the default
 * of current nbd-client), so no process of ours has to stay up. What identifies "our" connection
 * later is the device index plus the pid the kernel recorded at connect (/sys/block/nbdN/pid):
 * a device that was disconnected and reconnected by someone else shows another pid and is left
 * alone.
 *
 * Not exercised against a real kernel in this repository's CI (no nbd module there); the command
 * lines and the device selection are unit-tested against a fake sysfs tree.
 */
import path from "node:path";
import { SnapblockError } from "../errors/index.js";
import { CommandFailedError, runCommand, type CommandRunner, type MountInfoOptions } from "../mount/index.js";
import {
  assertAttachmentKey,
  validateAttachOptions,
  type AttachOptions,
  type Attachment,
  type BlockAttacher,
  type FindOptions,
} from "./attachment.js";
import { assertSocket, cleanupFailedAttach, recordMatches, toAttachment } from "./attach-steps.js";
import { deviceUsersCheck, type DeviceUsersCheck } from "./device-users.js";
import { KeyedMutex } from "./keyed-mutex.js";
import {
  freeNbdDevices,
  listNbdDevices,
  nbdClientConnectArgs,
  nbdClientDisconnectArgs,
  readNbdDevice,
  type NbdDeviceState,
} from "./nbd-devices.js";
import { sleep } from "../proc/index.js";
import { AttachmentStateStore, type AttachmentRecord } from "./state-store.js";
import { listAttachments } from "./list-attachments.js";

export interface NbdClientAttacherOptions extends MountInfoOptions {
  stateDir: string;
  runner?: CommandRunner;
  /** Default "/sys". */
  sysfsRoot?: string;
  /** Where the nbdN device nodes are. Default "/dev". */
  devRoot?: string;
  /** Default "nbd-client". */
  nbdClientCommand?: string;
  /** Logical block size of the device. Default 4096. */
  blockSize?: number;
  connections?: number;
  timeoutSeconds?: number;
  /** Replaces the in-use check (tests, where the device nodes are plain files). */
  deviceUsers?: DeviceUsersCheck;
  /** How long to wait for the kernel to show the connection (or its end) in sysfs. Default 5 s. */
  settleTimeoutMs?: number;
}

/** Free devices tried per attach before giving up (others may be taking them concurrently). */
const MAX_DEVICE_ATTEMPTS = 8;
const DEVICE_SELECTION = "\0nbd-device-selection";

export class NbdClientAttacher implements BlockAttacher {
  readonly kind = "nbd-client" as const;
  /** The kernel reads the size at connect; nbd-client has no way to pass a new one. */
  readonly onlineResize = false;
  private readonly store: AttachmentStateStore;
  private readonly run: CommandRunner;
  private readonly locks = new KeyedMutex();
  private readonly deviceUsers: DeviceUsersCheck;
  private readonly sysfsRoot: string;
  private readonly devRoot: string;

  constructor(private readonly options: NbdClientAttacherOptions) {
    this.store = new AttachmentStateStore(options.stateDir);
    this.run = options.runner ?? runCommand;
    this.sysfsRoot = options.sysfsRoot ?? "/sys";
    this.devRoot = options.devRoot ?? "/dev";
    this.deviceUsers = options.deviceUsers ?? deviceUsersCheck(options);
  }

  async attach(request: AttachOptions): Promise<Attachment> {
    validateAttachOptions(request);
    return this.locks.run(request.key, async () => {
      const existing = await this.store.read(request.key);
      if (existing !== undefined) {
        const current = await this.inspect(existing);
        if (current.health === "ok") {
          if (recordMatches(existing, request)) return current;
          throw new SnapblockError(
            "ALREADY_EXISTS",
            `attachment ${request.key} already serves ${existing.exportName} from ${existing.socketPath} ` +
              `(${existing.readOnly ? "ro" : "rw"}) on ${current.devicePath ?? "?"}; detach it first`,
          );
        }
        await this.teardown(existing);
      }
      await assertSocket(request.socketPath);
      // One device selection at a time in this process; other processes are handled by retrying.
      return this.locks.run(DEVICE_SELECTION, () => this.connectFreeDevice(request));
    });
  }

  async detach(key: string): Promise<void> {
    assertAttachmentKey(key);
    await this.locks.run(key, async () => {
      const record = await this.store.read(key);
      if (record !== undefined) await this.teardown(record);
    });
  }

  async find(key: string, _options: FindOptions = {}): Promise<Attachment | undefined> {
    assertAttachmentKey(key);
    return this.locks.run(key, async () => {
      const record = await this.store.read(key);
      return record === undefined || record.kind !== this.kind ? undefined : this.inspect(record);
    });
  }

  list(): Promise<Attachment[]> {
    return listAttachments(this.store, this.kind, (key) => this.find(key));
  }

  async refreshSize(key: string): Promise<number> {
    const attachment = await this.find(key);
    if (attachment === undefined || attachment.health !== "ok") {
      throw new SnapblockError("NOT_FOUND", `no healthy attachment ${key} to resize`);
    }
    return attachment.sizeBytes;
  }

  private devicePath(index: number): string {
    return path.join(this.devRoot, `nbd${index}`);
  }

  private async connectFreeDevice(request: AttachOptions): Promise<Attachment> {
    const devices = await listNbdDevices(this.sysfsRoot);
    if (devices.length === 0) {
      throw new SnapblockError(
        "INTERNAL",
        `no nbd devices in ${this.sysfsRoot}/block; is the nbd module loaded?`,
      );
    }
    const candidates = freeNbdDevices(devices).slice(0, MAX_DEVICE_ATTEMPTS);
    const failures: string[] = [];
    for (const index of candidates) {
      const record: AttachmentRecord = {
        version: 1,
        key: request.key,
        kind: this.kind,
        socketPath: request.socketPath,
        exportName: request.exportName,
        readOnly: request.readOnly,
        expectedSizeBytes: request.sizeBytes,
        phase: "attaching",
        devicePath: this.devicePath(index),
        createdAt: new Date().toISOString(),
        nbd: { index },
      };
      await this.store.write(record);
      try {
        await this.run({
          command: this.options.nbdClientCommand ?? "nbd-client",
          args: nbdClientConnectArgs({
            socketPath: request.socketPath,
            exportName: request.exportName,
            devicePath: this.devicePath(index),
            blockSize: this.options.blockSize ?? 4096,
            readOnly: request.readOnly,
            ...(this.options.connections === undefined ? {} : { connections: this.options.connections }),
            ...(this.options.timeoutSeconds === undefined
              ? {}
              : { timeoutSeconds: this.options.timeoutSeconds }),
          }),
          timeoutMs: 60_000,
        });
      } catch (err) {
        const taken = (await readNbdDevice(this.sysfsRoot, index)).pid !== undefined;
        if (err instanceof CommandFailedError && (taken || /busy|in use/i.test(err.result.stderr))) {
          // Another client took this device between our look and our connect: try the next one.
          failures.push(`nbd${index}: ${err.message}`);
          await this.store.remove(request.key);
          continue;
        }
        throw await cleanupFailedAttach(err, () => this.store.remove(request.key));
      }
      try {
        const state = await this.waitForDevice(index, (d) => d.pid !== undefined, "connected");
        record.nbd = { index, ...(state.pid === undefined ? {} : { kernelPid: state.pid }) };
        if (state.sizeBytes < request.sizeBytes) {
          throw new SnapblockError(
            "OUT_OF_RANGE",
            `export ${request.exportName} is ${state.sizeBytes} bytes, smaller than the expected ${request.sizeBytes}`,
          );
        }
        record.phase = "attached";
        await this.store.write(record);
      } catch (err) {
        throw await cleanupFailedAttach(err, () => this.teardown(record));
      }
      return this.inspect(record);
    }
    throw new SnapblockError(
      "BUSY",
      candidates.length === 0
        ? `all ${devices.length} nbd devices are in use; load the nbd module with a larger nbds_max`
        : `could not connect any nbd device: ${failures.join("; ")}`,
    );
  }

  /** Disconnects the device if it is still our connection, then forgets the record. */
  private async teardown(record: AttachmentRecord): Promise<void> {
    const index = record.nbd?.index;
    if (index !== undefined) {
      const state = await readNbdDevice(this.sysfsRoot, index);
      const ours =
        state.pid !== undefined &&
        (record.nbd?.kernelPid === undefined || record.nbd.kernelPid === state.pid);
      if (ours) {
        const devicePath = this.devicePath(index);
        const users = await this.deviceUsers(devicePath);
        if (users.length > 0) {
          throw new SnapblockError(
            "BUSY",
            `${devicePath} (attachment ${record.key}) is still in use: ${users.join("; ")}; unmount it before detaching`,
          );
        }
        await this.run({
          command: this.options.nbdClientCommand ?? "nbd-client",
          args: nbdClientDisconnectArgs(devicePath),
          timeoutMs: 60_000,
        });
        await this.waitForDevice(index, (d) => d.pid === undefined, "disconnected");
      }
    }
    await this.store.remove(record.key);
  }

  private async waitForDevice(
    index: number,
    condition: (state: NbdDeviceState) => boolean,
    what: string,
  ): Promise<NbdDeviceState> {
    const deadline = Date.now() + (this.options.settleTimeoutMs ?? 5_000);
    for (;;) {
      const state = await readNbdDevice(this.sysfsRoot, index);
      if (condition(state)) return state;
      if (Date.now() > deadline) {
        throw new SnapblockError("IO", `nbd${index} did not show as ${what} in ${this.sysfsRoot} in time`);
      }
      await sleep(25);
    }
  }

  private async inspect(record: AttachmentRecord): Promise<Attachment> {
    const problems: string[] = [];
    const index = record.nbd?.index;
    let state: NbdDeviceState | undefined;
    if (record.phase !== "attached") problems.push("the attach was interrupted before the device was ready");
    if (index === undefined) {
      problems.push("the record names no nbd device");
    } else {
      state = await readNbdDevice(this.sysfsRoot, index);
      if (state.pid === undefined) problems.push(`nbd${index} is not connected any more`);
      else if (record.nbd?.kernelPid !== undefined && state.pid !== record.nbd.kernelPid) {
        problems.push(`nbd${index} now belongs to another connection (pid ${state.pid})`);
      }
    }
    return toAttachment(record, {
      devicePath: index === undefined ? undefined : this.devicePath(index),
      sizeBytes: state?.sizeBytes ?? 0,
      problems,
      pid: record.nbd?.kernelPid,
    });
  }
}
