/**
 * Freezing a mounted filesystem around an operation (fsfreeze(8), the FIFREEZE/FITHAW ioctls):
 * the kernel writes every dirty block and metadata change to the device and holds new writes
 * until the thaw, so the device's blocks meanwhile form a clean filesystem. A snapshot taken in
 * that window needs no journal recovery (ext4 clears needs_recovery while frozen; xfs writes its
 * metadata back in place and leaves only the log-covering record).
 *
 * The freeze stops every writer of the filesystem, so it is bounded twice: the freeze itself may
 * take at most freezeTimeoutMs (it waits for dirty data to reach the device), and the filesystem
 * stays frozen at most holdMs whatever the operation is doing; a watchdog thaws it then.
 */
import { SnapblockError, asSnapblockError, isSnapblockError } from "../errors/index.js";
import { runCommand, type CommandRunner } from "./run-command.js";

export interface FreezeFilesystemOptions {
  /** Any mount point of the filesystem (FIFREEZE acts on the superblock, bind mounts included). */
  mountPoint: string;
  /** How long the freeze itself may take. Default 30 s. */
  freezeTimeoutMs?: number;
  /** How long the filesystem may stay frozen. Default 10 s. */
  holdMs?: number;
  /** Runs fsfreeze; tests replace it to make a freeze hang. */
  runner?: CommandRunner;
  /**
   * Told about a thaw done without the caller waiting (after a late freeze completed) and about
   * a thaw that failed, for the log: the caller has already been answered then.
   */
  onBackgroundEvent?: (message: string, fields: Record<string, unknown>) => void;
}

export interface FrozenResult<T> {
  value: T;
  /** How long the filesystem was frozen (freeze done -> thaw done), in milliseconds. */
  frozenMs: number;
  /** How long the freeze itself took, in milliseconds. */
  freezeMs: number;
}

const DEFAULT_FREEZE_TIMEOUT_MS = 30_000;
const DEFAULT_HOLD_MS = 10_000;
/** fsfreeze cannot be interrupted inside the ioctl; this only bounds a runaway process. */
const COMMAND_TIMEOUT_MS = 10 * 60_000;
const THAW_ATTEMPTS = 3;

/**
 * Runs fn with the filesystem at mountPoint frozen, and thaws it afterwards whatever happens: fn
 * failing, fn outlasting holdMs (the watchdog thaws first), or the freeze outlasting
 * freezeTimeoutMs (the thaw follows as soon as the freeze completes). Errors:
 * - BUSY: the filesystem is frozen already (by someone else: theirs is left alone);
 * - CANCELLED: the freeze took too long (fn did not run), or fn outlasted holdMs (fn ran to its
 *   end, but the filesystem was thawed before: its result may not be consistent);
 * - IO: fsfreeze failed, or the thaw failed (the message says how to thaw by hand);
 * - whatever fn threw.
 */
export async function withFrozenFilesystem<T>(
  options: FreezeFilesystemOptions,
  fn: () => Promise<T>,
): Promise<FrozenResult<T>> {
  const run = options.runner ?? runCommand;
  const mountPoint = options.mountPoint;
  const freezeTimeoutMs = options.freezeTimeoutMs ?? DEFAULT_FREEZE_TIMEOUT_MS;
  const holdMs = options.holdMs ?? DEFAULT_HOLD_MS;
  const thaw = () => thawFilesystem(run, mountPoint);

  const freezeStarted = performance.now();
  const freezing = run({
    command: "fsfreeze",
    args: ["--freeze", mountPoint],
    timeoutMs: COMMAND_TIMEOUT_MS,
  }).then(
    () => ({ ok: true as const }),
    (err: unknown) => ({ ok: false as const, err }),
  );
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), freezeTimeoutMs);
  });
  const frozen = await Promise.race([freezing, timedOut]);
  clearTimeout(timer);
  if (frozen === "timeout") {
    // The ioctl cannot be called off: once it completes the filesystem is frozen, and nobody
    // would thaw it. So the thaw is chained to it now, before answering.
    void freezing.then(async (late) => {
      if (!late.ok) return;
      try {
        await thaw();
        options.onBackgroundEvent?.("thawed a filesystem whose freeze completed after its timeout", {
          mountPoint,
        });
      } catch (err) {
        options.onBackgroundEvent?.("could not thaw a filesystem whose freeze completed late", {
          mountPoint,
          err,
        });
      }
    });
    throw new SnapblockError(
      "CANCELLED",
      `freezing the filesystem at ${mountPoint} took longer than ${seconds(freezeTimeoutMs)} (the kernel first writes its dirty data); nothing was done, and it is thawed as soon as the freeze completes`,
    );
  }
  if (!frozen.ok) throw freezeFailure(mountPoint, frozen.err);
  const frozenAt = performance.now();
  const freezeMs = frozenAt - freezeStarted;

  // The watchdog: no operation may keep the filesystem's writers waiting for longer than holdMs.
  // Its outcome is caught at once (a rejection must not go unhandled while fn still runs).
  let watchdogThaw: Promise<{ err?: SnapblockError }> | undefined;
  const watchdog = setTimeout(() => {
    watchdogThaw = thaw().then(
      () => ({}),
      (err: unknown) => ({ err: asSnapblockError(err, `thawing ${mountPoint}`) }),
    );
  }, holdMs);
  let outcome: { ok: true; value: T } | { ok: false; err: unknown };
  try {
    outcome = { ok: true, value: await fn() };
  } catch (err) {
    outcome = { ok: false, err };
  }
  clearTimeout(watchdog);
  // A thaw failure replaces fn's error, if any: blocked writers are the more urgent news.
  if (watchdogThaw) {
    const { err } = await watchdogThaw;
    if (err) throw err;
  } else {
    await thaw();
  }
  if (!outcome.ok) throw outcome.err;
  const frozenMs = performance.now() - frozenAt;
  if (watchdogThaw) {
    throw new SnapblockError(
      "CANCELLED",
      `the filesystem at ${mountPoint} may stay frozen for ${seconds(holdMs)}, and the operation took longer: it was thawed before the operation finished, so the result may not be consistent`,
    );
  }
  return { value: outcome.value, frozenMs, freezeMs };
}

/** FITHAW, retried: a filesystem left frozen blocks every writer of the volume. */
async function thawFilesystem(run: CommandRunner, mountPoint: string): Promise<void> {
  let last: unknown;
  for (let attempt = 1; attempt <= THAW_ATTEMPTS; attempt++) {
    try {
      await run({ command: "fsfreeze", args: ["--unfreeze", mountPoint], timeoutMs: COMMAND_TIMEOUT_MS });
      return;
    } catch (err) {
      last = err;
      await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
    }
  }
  throw new SnapblockError(
    "IO",
    `could not thaw the filesystem at ${mountPoint} (${errorText(last)}); its writers wait until it is: run \`fsfreeze --unfreeze ${mountPoint}\` on the node`,
    { cause: last },
  );
}

function freezeFailure(mountPoint: string, err: unknown): SnapblockError {
  const text = errorText(err);
  if (/Device or resource busy/i.test(text)) {
    // FIFREEZE on a frozen filesystem is EBUSY: someone else froze it, and only they may thaw it.
    return new SnapblockError(
      "BUSY",
      `the filesystem at ${mountPoint} is frozen already (by another tool or person); thaw it (fsfreeze --unfreeze) first`,
      { cause: err },
    );
  }
  if (isSnapblockError(err)) return new SnapblockError(err.code, `could not freeze: ${text}`, { cause: err });
  return new SnapblockError("IO", `could not freeze the filesystem at ${mountPoint}: ${text}`, {
    cause: err,
  });
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function seconds(ms: number): string {
  return `${Math.round(ms / 100) / 10} s`;
}
