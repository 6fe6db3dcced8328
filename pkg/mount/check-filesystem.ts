/**
 * Read-only consistency check of an unmounted filesystem: for tests and for operators, never
 * part of staging (a repair decision belongs to a person). `e2fsck -fn` forces a full check and
 * answers "no" to every fix; `xfs_repair -n` only reports.
 */
import type { FilesystemType } from "./make-filesystem.js";
import { runCommand, type CommandRunner } from "./run-command.js";

export interface FilesystemCheckResult {
  clean: boolean;
  exitCode: number;
  output: string;
}

/**
 * e2fsck(8): 0 clean, 4 errors left uncorrected (with -n: errors found); 8 and up are operational
 * failures (raised as errors by runCommand). xfs_repair(8) -n: 0 clean, 1 corruption found; 2 means a dirty log (mount it first).
 */
export async function checkFilesystem(options: {
  device: string;
  fsType: FilesystemType;
  runner?: CommandRunner;
}): Promise<FilesystemCheckResult> {
  const run = options.runner ?? runCommand;
  const { command, args, notClean } =
    options.fsType === "ext4"
      ? { command: "e2fsck", args: ["-f", "-n", options.device], notClean: [4] }
      : { command: "xfs_repair", args: ["-n", options.device], notClean: [1, 2] };
  const result = await run({ command, args, acceptExitCodes: notClean, timeoutMs: 600_000 });
  return { clean: result.exitCode === 0, exitCode: result.exitCode, output: result.stdout + result.stderr };
}
