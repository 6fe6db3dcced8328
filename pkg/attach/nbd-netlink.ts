/**
 * The kernel nbd driver's generic netlink interface, through snapblock-nbd-netlink
 * (native/nbd-netlink/, a small C program: Node.js cannot open AF_NETLINK sockets). What it adds
 * over nbd-client(8): a dead-connection timeout at connect, so that requests wait for a new
 * connection instead of failing when the NBD server goes away, and NBD_CMD_RECONFIGURE, which
 * hands such a device a new connection. docs/node-attach.md, "Restarts".
 *
 * The helper connects to the export's unix socket and does the NBD handshake itself, then passes
 * the socket to the kernel; it exits once the kernel has it.
 */
import { constants as fsConstants, promises as fs, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { SnapblockError, type ErrorCode } from "../errors/index.js";
import { findExecutable, type CommandRunner, type CommandResult } from "../mount/index.js";

export const NBD_NETLINK_HELPER = "snapblock-nbd-netlink";

/**
 * How long the kernel holds I/O on a device whose connection died before failing it: long
 * enough for the data plane to restart (a pod restart, an image pull), short enough that a node
 * whose data plane is gone for good shows errors instead of hanging its pods forever.
 */
export const DEFAULT_DEAD_CONN_TIMEOUT_SECONDS = 120;

/** The helper's exit codes (snapblock-nbd-netlink.c). */
const EXIT_REASONS: Record<number, NbdNetlinkFailure> = {
  1: "failed",
  2: "usage",
  3: "no-module",
  4: "busy",
  5: "server",
  6: "not-configured",
};

export type NbdNetlinkFailure = "failed" | "usage" | "no-module" | "busy" | "server" | "not-configured";

const ERROR_CODES: Record<NbdNetlinkFailure, ErrorCode> = {
  failed: "IO",
  usage: "INVALID_ARGUMENT",
  "no-module": "INTERNAL",
  busy: "BUSY",
  server: "IO",
  "not-configured": "NOT_FOUND",
};

/** The helper said no; `reason` tells callers what kind of no (a busy device is retried elsewhere). */
export class NbdNetlinkError extends SnapblockError {
  constructor(
    readonly reason: NbdNetlinkFailure,
    message: string,
  ) {
    super(ERROR_CODES[reason], message);
  }
}

/**
 * Where native/nbd-netlink/build.sh puts the helper in this package: the directory of the nearest
 * package.json named snapblock above this file (the source tree, or the install dist/ is in).
 */
export function bundledNbdNetlinkHelper(): string | undefined {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8")) as { name?: string };
      if (pkg.name === "snapblock") return path.join(dir, "native", "nbd-netlink", NBD_NETLINK_HELPER);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") return undefined;
    }
    const parent = path.dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

/** The helper in this package if it was built, else one on PATH, else undefined. */
export async function findNbdNetlinkHelper(searchPath?: string): Promise<string | undefined> {
  const bundled = bundledNbdNetlinkHelper();
  if (bundled !== undefined) {
    try {
      await fs.access(bundled, fsConstants.X_OK);
      return bundled;
    } catch {
      // Not built in this tree: look on PATH.
    }
  }
  return findExecutable(NBD_NETLINK_HELPER, searchPath);
}

export interface NbdNetlinkConnect {
  socketPath: string;
  exportName: string;
  index: number;
  blockSize: number;
  readOnly: boolean;
  deadConnTimeoutSeconds: number;
  connections?: number;
  timeoutSeconds?: number;
}

export function nbdNetlinkConnectArgs(c: NbdNetlinkConnect): string[] {
  return [
    "connect",
    "--unix",
    c.socketPath,
    "--export",
    c.exportName,
    "--index",
    String(c.index),
    "--block-size",
    String(c.blockSize),
    "--dead-conn-timeout",
    String(c.deadConnTimeoutSeconds),
    ...(c.readOnly ? ["--read-only"] : []),
    ...(c.connections !== undefined && c.connections > 1 ? ["--connections", String(c.connections)] : []),
    ...(c.timeoutSeconds !== undefined ? ["--timeout", String(c.timeoutSeconds)] : []),
  ];
}

export function nbdNetlinkReconfigureArgs(c: {
  index: number;
  socketPath: string;
  exportName: string;
  connections?: number;
}): string[] {
  return [
    "reconfigure",
    "--index",
    String(c.index),
    "--unix",
    c.socketPath,
    "--export",
    c.exportName,
    ...(c.connections !== undefined && c.connections > 1 ? ["--connections", String(c.connections)] : []),
  ];
}

/** `key=value key=value` (the helper's one line of output) as a map. */
export function parseHelperOutput(stdout: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const word of stdout.trim().split(/\s+/)) {
    const eq = word.indexOf("=");
    if (eq > 0) fields.set(word.slice(0, eq), word.slice(eq + 1));
  }
  return fields;
}

function wholeField(fields: Map<string, string>, name: string, stdout: string): number {
  const value = Number(fields.get(name));
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new SnapblockError("IO", `${NBD_NETLINK_HELPER} printed no ${name}: ${JSON.stringify(stdout)}`);
  }
  return value;
}

/** Runs the helper; every failure is an NbdNetlinkError carrying the helper's own sentence. */
export class NbdNetlinkHelper {
  constructor(
    readonly command: string,
    private readonly run: CommandRunner,
  ) {}

  async connect(c: NbdNetlinkConnect): Promise<{ index: number; sizeBytes: number }> {
    const out = await this.call(nbdNetlinkConnectArgs(c));
    return {
      index: wholeField(out.fields, "index", out.stdout),
      sizeBytes: wholeField(out.fields, "size", out.stdout),
    };
  }

  async reconfigure(c: Parameters<typeof nbdNetlinkReconfigureArgs>[0]): Promise<void> {
    await this.call(nbdNetlinkReconfigureArgs(c));
  }

  async disconnect(index: number): Promise<void> {
    await this.call(["disconnect", "--index", String(index)]);
  }

  /** Whether the device holds a configuration (true also while its connection is dead and waits). */
  async configured(index: number): Promise<boolean> {
    const out = await this.call(["status", "--index", String(index)]);
    return out.fields.get("connected") === "1";
  }

  /** The generic netlink family id of "nbd": fails with reason "no-module" when the module is not loaded. */
  async family(): Promise<number> {
    const out = await this.call(["family"]);
    return wholeField(out.fields, "family", out.stdout);
  }

  private async call(args: string[]): Promise<{ stdout: string; fields: Map<string, string> }> {
    let result: CommandResult;
    try {
      result = await this.run({
        command: this.command,
        args,
        acceptExitCodes: Object.keys(EXIT_REASONS).map(Number),
        timeoutMs: 90_000,
      });
    } catch (err) {
      throw new SnapblockError("IO", `${NBD_NETLINK_HELPER} ${args[0]}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (result.exitCode !== 0) {
      const reason = EXIT_REASONS[result.exitCode] ?? "failed";
      const said = result.stderr.trim().replace(/^snapblock-nbd-netlink: /, "");
      throw new NbdNetlinkError(
        reason,
        said || `${NBD_NETLINK_HELPER} ${args[0]} exited with ${result.exitCode}`,
      );
    }
    return { stdout: result.stdout, fields: parseHelperOutput(result.stdout) };
  }
}
