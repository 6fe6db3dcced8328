/**
 * NBD export -> /dev/nbdN through the kernel nbd driver, the fast path on nodes whose kernel has
 * the nbd module. (The kind is called "nbd-client" after the first way this was done; records,
 * flags and metrics use that name.) Two ways to hand the connection to the kernel:
 *
 * - snapblock-nbd-netlink (native/nbd-netlink/, nbd-netlink.ts) when it is available: a netlink
 *   connect with a dead-connection timeout, so that I/O waits when the data plane (the NBD
 *   server) restarts, and reconnect() after the restart gives the device a new connection;
 * - otherwise nbd-client(8) (Debian: nbd-client), which cannot reconnect: after a data plane
 *   restart such a device is reported broken, and unstage + stage heals it.
 *
 * Either way the kernel keeps the connection once it has it, so no process of ours has to stay
 * up. What identifies "our" connection later is the device index plus the pid the kernel recorded
 * at connect (/sys/block/nbdN/pid): a device that was disconnected and reconnected by someone
 * else shows another pid and is left alone.
 *
 * Not exercised against a real kernel in this repository's CI (no nbd module there); the command
 * lines, the device selection and the reconnect decisions are unit-tested against a fake sysfs
 * tree and fake helpers, and the helper itself is tested as far as a kernel without nbd allows.
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
  type ReconnectOptions,
  type ReconnectResult,
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
import {
  DEFAULT_DEAD_CONN_TIMEOUT_SECONDS,
  NBD_NETLINK_HELPER,
  NbdNetlinkError,
  NbdNetlinkHelper,
} from "./nbd-netlink.js";
import { AttachmentStateStore, type AttachmentRecord, type NbdRecord } from "./state-store.js";
import { listAttachments } from "./list-attachments.js";

export interface NbdClientAttacherOptions extends MountInfoOptions {
  stateDir: string;
  runner?: CommandRunner;
  /** Default "/sys". */
  sysfsRoot?: string;
  /** Where the nbdN device nodes are. Default "/dev". */
  devRoot?: string;
  /** Default "nbd-client". Still used to disconnect devices recorded as attached by it. */
  nbdClientCommand?: string;
  /**
   * snapblock-nbd-netlink (nbd-netlink.ts, findNbdNetlinkHelper): when given, attaches go
   * through it with a dead-connection timeout and can be reconnected after a data plane restart.
   */
  netlinkHelper?: string;
  /** Seconds the kernel holds I/O for a new connection when the server goes away. Default 120. */
  deadConnTimeoutSeconds?: number;
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
  private readonly helper: NbdNetlinkHelper | undefined;
  /** Set by reconnect(): why a device could not be reconnected after this data plane started. */
  private readonly restartProblems = new Map<string, string>();

  constructor(private readonly options: NbdClientAttacherOptions) {
    this.store = new AttachmentStateStore(options.stateDir);
    this.run = options.runner ?? runCommand;
    const deadConn = options.deadConnTimeoutSeconds;
    if (deadConn !== undefined && (!Number.isSafeInteger(deadConn) || deadConn < 1 || deadConn > 86400)) {
      throw new SnapblockError(
        "INVALID_ARGUMENT",
        `dead-connection timeout ${deadConn}: whole seconds from 1 to 86400`,
      );
    }
    this.helper =
      options.netlinkHelper === undefined ? undefined : new NbdNetlinkHelper(options.netlinkHelper, this.run);
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

  /**
   * After a restart of the data plane, whose NBD server held the device's connection: a device
   * connected through the netlink helper is waiting (up to its dead-connection timeout) for a new
   * connection; this gives it one (NBD_CMD_RECONFIGURE with a new socket to the export, which the
   * caller serves again first). A device that cannot be reconnected is reported broken by find()
   * with what to do.
   */
  async reconnect(key: string, options: ReconnectOptions = {}): Promise<ReconnectResult> {
    assertAttachmentKey(key);
    return this.locks.run(key, async () => {
      const record = await this.store.read(key);
      if (record === undefined || record.kind !== this.kind) {
        return { reconnected: false, message: `no kernel nbd attachment ${key} is recorded` };
      }
      const index = record.nbd?.index;
      const plan = planReconnect(record, {
        helperAvailable: this.helper !== undefined,
        device: index === undefined ? undefined : await readNbdDevice(this.sysfsRoot, index),
      });
      if (plan.action === "leave") return { reconnected: false, message: plan.why };
      if (plan.action === "broken") {
        this.restartProblems.set(key, plan.problem);
        return { reconnected: false, message: plan.problem };
      }
      const helper = this.helper!;
      const nbd = record.nbd!;
      const failed = (why: string): ReconnectResult => {
        const problem = `nbd${nbd.index} could not be reconnected to its export after the data plane restarted (${why}), so I/O on it fails`;
        this.restartProblems.set(key, problem);
        return { reconnected: false, message: problem };
      };
      try {
        if (!(await helper.configured(nbd.index))) {
          return failed("the kernel no longer holds its configuration: it was disconnected meanwhile");
        }
        await helper.reconfigure({
          index: nbd.index,
          socketPath: record.socketPath,
          exportName: record.exportName,
          ...(nbd.connections === undefined ? {} : { connections: nbd.connections }),
        });
      } catch (err) {
        return failed((err as Error).message);
      }
      const timeout = nbd.deadConnTimeoutSeconds;
      if (options.awayMs !== undefined && timeout !== undefined && options.awayMs > timeout * 1000) {
        // Reconnected, but the kernel failed I/O once the timeout was over: what sits on the
        // device may have seen errors, which only a person (or a fresh stage) should judge.
        const problem = `nbd${nbd.index} was reconnected, but the data plane was away about ${Math.round(options.awayMs / 1000)} s, longer than its dead-connection timeout (${timeout} s): I/O on it failed meanwhile and the filesystem on it may have recorded errors`;
        this.restartProblems.set(key, problem);
        return { reconnected: true, message: problem };
      }
      this.restartProblems.delete(key);
      return {
        reconnected: true,
        message: `nbd${nbd.index} has a new connection to ${record.exportName} (I/O held by the kernel meanwhile resumes)`,
      };
    });
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
        nbd: this.newNbdRecord(index),
      };
      await this.store.write(record);
      try {
        if (this.helper !== undefined) {
          await this.helper.connect({
            socketPath: request.socketPath,
            exportName: request.exportName,
            index,
            blockSize: this.options.blockSize ?? 4096,
            readOnly: request.readOnly,
            deadConnTimeoutSeconds: this.deadConnTimeoutSeconds(),
            ...(this.options.connections === undefined ? {} : { connections: this.options.connections }),
            ...(this.options.timeoutSeconds === undefined
              ? {}
              : { timeoutSeconds: this.options.timeoutSeconds }),
          });
        } else {
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
        }
      } catch (err) {
        const taken = (await readNbdDevice(this.sysfsRoot, index)).pid !== undefined;
        const busy =
          (err instanceof CommandFailedError && (taken || /busy|in use/i.test(err.result.stderr))) ||
          (err instanceof NbdNetlinkError && (taken || err.reason === "busy"));
        if (busy) {
          // Another client took this device between our look and our connect: try the next one.
          failures.push(`nbd${index}: ${err.message}`);
          await this.store.remove(request.key);
          continue;
        }
        throw await cleanupFailedAttach(err, () => this.store.remove(request.key));
      }
      try {
        const state = await this.waitForDevice(index, (d) => d.pid !== undefined, "connected");
        record.nbd = { ...record.nbd, index, ...(state.pid === undefined ? {} : { kernelPid: state.pid }) };
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
        await this.disconnect(record.nbd!, devicePath);
        await this.waitForDevice(index, (d) => d.pid === undefined, "disconnected");
      }
    }
    await this.store.remove(record.key);
    this.restartProblems.delete(record.key);
  }

  /** Disconnects the way the device was connected. */
  private async disconnect(nbd: NbdRecord, devicePath: string): Promise<void> {
    if (nbd.via !== "netlink") {
      await this.run({
        command: this.options.nbdClientCommand ?? "nbd-client",
        args: nbdClientDisconnectArgs(devicePath),
        timeoutMs: 60_000,
      });
      return;
    }
    if (this.helper === undefined) {
      throw new SnapblockError(
        "INTERNAL",
        `${devicePath} was attached through ${NBD_NETLINK_HELPER}, which this data plane cannot find; build it (native/nbd-netlink/build.sh) or install it on PATH`,
      );
    }
    try {
      await this.helper.disconnect(nbd.index);
    } catch (err) {
      // Already disconnected (the kernel dropped it between our look and now): that is the goal.
      if (!(err instanceof NbdNetlinkError && err.reason === "not-configured")) throw err;
    }
  }

  private deadConnTimeoutSeconds(): number {
    return this.options.deadConnTimeoutSeconds ?? DEFAULT_DEAD_CONN_TIMEOUT_SECONDS;
  }

  private newNbdRecord(index: number): NbdRecord {
    if (this.helper === undefined) return { index };
    return {
      index,
      via: "netlink",
      deadConnTimeoutSeconds: this.deadConnTimeoutSeconds(),
      ...(this.options.connections !== undefined && this.options.connections > 1
        ? { connections: this.options.connections }
        : {}),
    };
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
    const afterRestart = this.restartProblems.get(record.key);
    if (afterRestart !== undefined) problems.push(afterRestart);
    return toAttachment(record, {
      devicePath: index === undefined ? undefined : this.devicePath(index),
      sizeBytes: state?.sizeBytes ?? 0,
      problems,
      pid: record.nbd?.kernelPid,
    });
  }
}

export type ReconnectPlan =
  | { action: "reconnect" }
  /** Nothing to do here: find() already reports what is wrong (or nothing is). */
  | { action: "leave"; why: string }
  /** Cannot be reconnected: find() must report this problem from now on. */
  | { action: "broken"; problem: string };

/**
 * What a data plane that just started does with a kernel nbd attachment it finds recorded (its
 * predecessor's NBD server held the connection, so that connection is dead): reconnect what was
 * connected through the netlink helper and is still ours, report the rest.
 */
export function planReconnect(
  record: AttachmentRecord,
  found: { helperAvailable: boolean; device: NbdDeviceState | undefined },
): ReconnectPlan {
  const nbd = record.nbd;
  if (record.phase !== "attached" || nbd === undefined || found.device === undefined) {
    return { action: "leave", why: "the attach never completed: nothing to reconnect" };
  }
  if (found.device.pid === undefined) {
    return { action: "leave", why: `nbd${nbd.index} is not connected any more: nothing to reconnect` };
  }
  if (nbd.kernelPid !== undefined && found.device.pid !== nbd.kernelPid) {
    return { action: "leave", why: `nbd${nbd.index} now belongs to another connection: left alone` };
  }
  if (nbd.via !== "netlink") {
    return {
      action: "broken",
      problem: `nbd${nbd.index} was attached with nbd-client, which cannot reconnect: its connection ended with the previous data plane, so I/O on it fails`,
    };
  }
  if (!found.helperAvailable) {
    return {
      action: "broken",
      problem: `nbd${nbd.index} was attached through ${NBD_NETLINK_HELPER}, which this data plane cannot find (native/nbd-netlink/build.sh builds it), so it cannot be reconnected and I/O on it fails once its dead-connection timeout is over`,
    };
  }
  return { action: "reconnect" };
}
