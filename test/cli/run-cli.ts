import { execFile } from "node:child_process";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** tsx's loader by URL, so that the CLI can run from any working directory. */
export const TSX = pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the real operator CLI (`node --import tsx cmd/snapblock.ts ARGS`) against a CSI socket, as
 * a person at a terminal would (SNAPBLOCK_ENDPOINT), and collects its exit code and output.
 */
export function runCli(
  socketPath: string,
  args: string[],
  options: { cwd?: string } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ["--import", TSX, path.join(ROOT, "cmd/snapblock.ts"), ...args],
      {
        cwd: options.cwd ?? ROOT,
        env: { ...process.env, SNAPBLOCK_ENDPOINT: `unix://${socketPath}` },
        timeout: 120_000,
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : undefined) : 0;
        if (code === undefined)
          reject(new Error(`snapblock ${args.join(" ")} did not exit: ${err?.message ?? "?"}`));
        else resolve({ code, stdout, stderr });
      },
    );
  });
}
