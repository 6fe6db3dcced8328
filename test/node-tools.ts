import { execFileSync } from "node:child_process";

/**
 * Whether this run can use the node's block path: root, /dev/fuse, and every command named
 * (tests that attach, format or mount skip themselves otherwise).
 */
export function rootWithTools(commands: readonly string[]): boolean {
  if (process.getuid?.() !== 0) return false;
  const script = [...commands.map((c) => `command -v ${c}`), "test -e /dev/fuse"].join(" && ");
  try {
    execFileSync("sh", ["-c", script], { stdio: "ignore" });
    return true;
  } catch {
    return false; // a missing command or device: the test skips
  }
}
