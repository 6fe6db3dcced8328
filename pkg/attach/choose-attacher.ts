/**
 * Picks the attacher for this node, once, at node plugin start:
 *
 * 1. Attachments already recorded in the state directory keep the kind they were made with (a
 *    restarted plugin must manage the devices it made, whatever changed meanwhile).
 * 2. Kernel nbd when the nbd module is loaded (or `modprobe nbd` loads it) and a way to hand it a
 *    connection is there: snapblock-nbd-netlink (preferred: devices survive a data plane restart)
 *    or nbd-client. The device is served by the kernel directly.
 * 3. Otherwise nbdfuse + loop, which needs only FUSE and the loop driver.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { SnapblockError } from "../errors/index.js";
import { findExecutable, runCommand, type CommandRunner } from "../mount/index.js";
import type { AttacherKind, BlockAttacher } from "./attachment.js";
import { NbdClientAttacher, type NbdClientAttacherOptions } from "./nbd-client-attacher.js";
import {
  DEFAULT_DEAD_CONN_TIMEOUT_SECONDS,
  NBD_NETLINK_HELPER,
  findNbdNetlinkHelper,
} from "./nbd-netlink.js";
import {
  NbdfuseLoopAttacher,
  nbdfuseLoopMissing,
  type NbdfuseLoopAttacherOptions,
} from "./nbdfuse-loop-attacher.js";
import { AttachmentStateStore } from "./state-store.js";

export interface ChooseAttacherOptions {
  stateDir: string;
  /** "auto" (default) decides as described above; a kind forces it. */
  prefer?: "auto" | AttacherKind;
  /** Default "/sys". */
  sysfsRoot?: string;
  runner?: CommandRunner;
  /** Try `modprobe nbd` when the module is not loaded. Default true. */
  loadModule?: boolean;
  /**
   * Looks up programs; tests replace it. Default: search PATH, and for snapblock-nbd-netlink
   * first the one built in this package (native/nbd-netlink/build.sh).
   */
  findProgram?: (name: string) => Promise<string | undefined>;
  nbdClient?: Omit<NbdClientAttacherOptions, "stateDir">;
  nbdfuse?: Omit<NbdfuseLoopAttacherOptions, "stateDir">;
}

export interface ChosenAttacher {
  attacher: BlockAttacher;
  /** One sentence for the startup log: which path and why. */
  reason: string;
}

export async function chooseAttacher(options: ChooseAttacherOptions): Promise<ChosenAttacher> {
  const sysfsRoot = options.sysfsRoot ?? "/sys";
  const run = options.runner ?? runCommand;
  const findProgram =
    options.findProgram ??
    ((name: string) => (name === NBD_NETLINK_HELPER ? findNbdNetlinkHelper() : findExecutable(name)));
  const helper = options.nbdClient?.netlinkHelper ?? (await findProgram(NBD_NETLINK_HELPER));
  const build = (kind: AttacherKind): BlockAttacher =>
    kind === "nbd-client"
      ? new NbdClientAttacher({
          sysfsRoot,
          runner: run,
          ...options.nbdClient,
          ...(helper === undefined ? {} : { netlinkHelper: helper }),
          stateDir: options.stateDir,
        })
      : new NbdfuseLoopAttacher({ sysfsRoot, runner: run, ...options.nbdfuse, stateDir: options.stateDir });
  const kernelNbdHow =
    helper === undefined
      ? `connecting with nbd-client: no ${NBD_NETLINK_HELPER} (native/nbd-netlink/build.sh), so devices do not survive a data plane restart`
      : `connecting with ${helper}, dead-connection timeout ${options.nbdClient?.deadConnTimeoutSeconds ?? DEFAULT_DEAD_CONN_TIMEOUT_SECONDS} s: devices reconnect after a data plane restart`;

  const prefer = options.prefer ?? "auto";
  if (prefer !== "auto") {
    return {
      attacher: build(prefer),
      reason: `${prefer} was configured${prefer === "nbd-client" ? `; ${kernelNbdHow}` : ""}`,
    };
  }

  const recorded = new Set((await new AttachmentStateStore(options.stateDir).list()).map((r) => r.kind));
  if (recorded.size > 1) {
    throw new SnapblockError(
      "CORRUPT",
      `${options.stateDir} holds attachments of both kinds (${[...recorded].join(", ")}); one node uses one kind`,
    );
  }
  const [existing] = recorded;
  if (existing !== undefined) {
    return {
      attacher: build(existing),
      reason: `existing attachments in ${options.stateDir} use ${existing}${existing === "nbd-client" ? `; ${kernelNbdHow}` : ""}`,
    };
  }

  const notes: string[] = [];
  let moduleLoaded = await exists(path.join(sysfsRoot, "module", "nbd"));
  if (!moduleLoaded && options.loadModule !== false) {
    const result = await run({
      command: "modprobe",
      args: ["nbd"],
      acceptExitCodes: [1],
      timeoutMs: 30_000,
    }).catch((err: unknown) => ({ exitCode: -1, stderr: (err as Error).message }));
    moduleLoaded = await exists(path.join(sysfsRoot, "module", "nbd"));
    if (!moduleLoaded) notes.push(`no nbd kernel module (modprobe nbd: ${result.stderr.trim() || "failed"})`);
  }
  if (moduleLoaded) {
    if (helper !== undefined) {
      return { attacher: build("nbd-client"), reason: `the kernel nbd module is loaded; ${kernelNbdHow}` };
    }
    if ((await findProgram(options.nbdClient?.nbdClientCommand ?? "nbd-client")) !== undefined) {
      return {
        attacher: build("nbd-client"),
        reason: `the kernel nbd module is loaded and nbd-client is installed; ${kernelNbdHow}`,
      };
    }
    notes.push(
      `the nbd module is loaded but neither ${NBD_NETLINK_HELPER} nor nbd-client (Debian package nbd-client) is installed`,
    );
  }
  const missing = await nbdfuseLoopMissing({
    findProgram,
    ...(options.nbdfuse?.nbdfuseCommand === undefined
      ? {}
      : { nbdfuseCommand: options.nbdfuse.nbdfuseCommand }),
  });
  if (missing.length > 0) {
    throw new SnapblockError(
      "INTERNAL",
      `no way to attach NBD exports on this node: ${[...notes, `nbdfuse + loop needs ${missing.join(", ")}`].join("; ")}`,
    );
  }
  return { attacher: build("nbdfuse-loop"), reason: `nbdfuse + loop: ${notes.join("; ")}` };
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.access(p);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw new SnapblockError("IO", `could not check ${p}: ${(err as Error).message}`, { cause: err });
  }
}
