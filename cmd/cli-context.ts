/** What a subcommand gets from the entry point (cmd/snapblock.ts): only cmd/ reads argv and env. */
export interface CliContext {
  /** Arguments after the subcommand (and verb). */
  args: string[];
  cwd: string;
  env: NodeJS.ProcessEnv;
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  stderrIsTTY: boolean;
}
