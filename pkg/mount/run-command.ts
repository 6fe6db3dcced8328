/**
 * The one way the node layer runs an external program (mount, losetup, mkfs, nbdfuse helpers...).
 *
 * Always asynchronous: the NBD server that backs the devices lives in the same process, so a
 * synchronous spawn of a program that does I/O on one of our devices would deadlock it.
 * Every failure becomes a SnapblockError that names the program, its arguments and why it failed
 * (exit code plus the tail of its stderr), because "mount failed" alone is not actionable. Mount
 * option values are never in those messages (describeCommand): CSI mount_flags come from the
 * StorageClass, and options such as `password=` carry secrets.
 */
import { spawn } from "node:child_process";
import { constants as fsConstants, promises as fs } from "node:fs";
import path from "node:path";
import { SnapblockError, type ErrorCode } from "../errors/index.js";

export interface RunCommandOptions {
  command: string;
  args: readonly string[];
  /** Killed (SIGKILL, by pid) after this long. Default 60 s. */
  timeoutMs?: number;
  /**
   * Exit codes that are answers rather than failures (blkid exits 2 when it finds nothing,
   * e2fsck exits 4 when it finds errors). 0 is always accepted.
   */
  acceptExitCodes?: readonly number[];
  /** Code of the SnapblockError raised on failure. Default IO. */
  errorCode?: ErrorCode;
}

export interface CommandResult {
  command: string;
  args: readonly string[];
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Injected where tests replace real programs with a fake (the nbd-client path, for one). */
export type CommandRunner = (options: RunCommandOptions) => Promise<CommandResult>;

const DEFAULT_TIMEOUT_MS = 60_000;
/** Output beyond this is dropped: the tools we run print little, a runaway one must not eat memory. */
const OUTPUT_CAP = 1024 * 1024;
const STDERR_TAIL = 600;

export const runCommand: CommandRunner = (options) => {
  const { command, args } = options;
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const errorCode = options.errorCode ?? "IO";
  const accepted = new Set([0, ...(options.acceptExitCodes ?? [])]);
  return new Promise<CommandResult>((resolve, reject) => {
    // LC_ALL=C: messages we show or match (e.g. "target is busy") must not be translated.
    const child = spawn(command, [...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, LC_ALL: "C" },
    });
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    child.stdout.on("data", (chunk: Buffer) => {
      if (stdout.length < OUTPUT_CAP) stdout += chunk.toString();
    });
    child.stderr.on("data", (chunk: Buffer) => {
      if (stderr.length < OUTPUT_CAP) stderr += chunk.toString();
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.once("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const why =
        err.code === "ENOENT"
          ? `${command} is not installed or not on PATH`
          : `could not start ${command}: ${err.message}`;
      reject(new SnapblockError("INTERNAL", `${describeCommand(command, args)}: ${why}`, { cause: err }));
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      const result: CommandResult = { command, args, exitCode: code ?? -1, stdout, stderr };
      if (timedOut) {
        reject(
          new SnapblockError(
            errorCode,
            `${describeCommand(command, args)} timed out after ${timeoutMs} ms and was killed${tail(stderr, args)}`,
          ),
        );
      } else if (code === null) {
        reject(
          new SnapblockError(
            errorCode,
            `${describeCommand(command, args)} was killed by ${signal ?? "a signal"}${tail(stderr, args)}`,
          ),
        );
      } else if (!accepted.has(code)) {
        reject(new CommandFailedError(errorCode, result));
      } else {
        resolve(result);
      }
    });
  });
};

/** A program ran and exited with a code it should not have; carries its output for callers that match on it. */
export class CommandFailedError extends SnapblockError {
  readonly result: CommandResult;

  constructor(code: ErrorCode, result: CommandResult) {
    super(
      code,
      `${describeCommand(result.command, result.args)} failed with exit code ${result.exitCode}${tail(result.stderr || result.stdout, result.args)}`,
    );
    this.result = result;
  }
}

/**
 * Human-readable command line for messages, quoting arguments that need it, with the value of
 * every mount option (`-o a=b,c` -> `-o a=<redacted>,c`) left out: option names say enough to act
 * on, and values may be secrets.
 */
export function describeCommand(command: string, args: readonly string[]): string {
  return [command, ...args.map((arg, i) => (isOptionList(args, i) ? redactOptionList(arg) : arg))]
    .map((word) => (/^[\w@%+=:,./<>-]+$/.test(word) ? word : JSON.stringify(word)))
    .join(" ");
}

const REDACTED = "<redacted>";

/** The argument after `-o`/`--options` (mount(8), losetup and others): a comma-separated list. */
function isOptionList(args: readonly string[], i: number): boolean {
  const before = args[i - 1];
  return before === "-o" || before === "--options";
}

function redactOptionList(list: string): string {
  return list
    .split(",")
    .map((option) => (option.includes("=") ? `${option.slice(0, option.indexOf("="))}=${REDACTED}` : option))
    .join(",");
}

/**
 * Option values of at least this length are also blotted out of a program's output (a helper may
 * echo its options); shorter ones (uid=0, size=1) would blot out unrelated digits and letters.
 */
const MIN_REDACTED_IN_OUTPUT = 4;

function tail(output: string, args: readonly string[]): string {
  let text = output.trim();
  if (text === "") return "";
  for (const [i, arg] of args.entries()) {
    if (!isOptionList(args, i)) continue;
    for (const option of arg.split(",")) {
      const value = option.includes("=") ? option.slice(option.indexOf("=") + 1) : "";
      if (value.length >= MIN_REDACTED_IN_OUTPUT) text = text.split(value).join(REDACTED);
    }
  }
  return `: ${text.length > STDERR_TAIL ? `...${text.slice(-STDERR_TAIL)}` : text}`;
}

const NOT_HERE = new Set(["ENOENT", "EACCES", "ENOTDIR"]);

/** The absolute path of an executable on PATH, or undefined: lets callers choose a path before failing. */
export async function findExecutable(
  name: string,
  searchPath = process.env.PATH ?? "",
): Promise<string | undefined> {
  const dirs = name.includes("/") ? [""] : searchPath.split(path.delimiter).filter((dir) => dir !== "");
  for (const dir of dirs) {
    const candidate = dir === "" ? name : path.join(dir, name);
    try {
      await fs.access(candidate, fsConstants.X_OK);
      return candidate;
    } catch (err) {
      // Not here (or not executable): keep looking in the next PATH entry.
      if (!NOT_HERE.has((err as NodeJS.ErrnoException).code ?? "")) {
        throw new SnapblockError("IO", `could not check ${candidate}: ${(err as Error).message}`, {
          cause: err,
        });
      }
    }
  }
  return undefined;
}
