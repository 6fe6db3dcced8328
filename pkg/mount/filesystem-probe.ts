/**
 * What is on a device before we decide to make a filesystem on it. The rule this module exists
 * for: never mkfs over data. Only a device on which libblkid's low-level probe finds no
 * signature at all (no filesystem, no partition table, no RAID/LUKS/LVM member, no swap) counts as
 * blank; everything else is either a filesystem we can mount or content we refuse to touch.
 *
 * `blkid -p` (low-level probing) rather than plain `blkid`: it reads the device itself instead of
 * trusting the blkid cache, and it reports partition tables (PTTYPE) too.
 */
import { SnapblockError } from "../errors/index.js";
import { runCommand, type CommandRunner } from "./run-command.js";

export type DeviceContent =
  | { kind: "blank" }
  | { kind: "filesystem"; fsType: string; uuid?: string; label?: string }
  | { kind: "other"; description: string; tags: Record<string, string> };

/** blkid exit codes (blkid(8)): 2 = nothing found, 8 = ambivalent low-level probing result. */
const BLKID_NOTHING_FOUND = 2;
const BLKID_AMBIVALENT = 8;

/** `KEY=value` lines of `blkid -o export`; a blank line separates devices, only the first is kept. */
export function parseBlkidExport(text: string): Record<string, string> {
  const tags: Record<string, string> = {};
  for (const line of text.split("\n")) {
    if (line.trim() === "") {
      if (Object.keys(tags).length > 0) break;
      continue;
    }
    const eq = line.indexOf("=");
    if (eq <= 0) continue;
    // blkid -o export escapes unsafe characters in values with backslashes; undo that.
    tags[line.slice(0, eq)] = line.slice(eq + 1).replace(/\\(.)/g, "$1");
  }
  return tags;
}

/** Classifies blkid's answer; pure so that every branch is unit-tested. */
export function classifyBlkid(exitCode: number, stdout: string): DeviceContent {
  if (exitCode === BLKID_NOTHING_FOUND) return { kind: "blank" };
  const tags = parseBlkidExport(stdout);
  if (exitCode === BLKID_AMBIVALENT) {
    return { kind: "other", description: "several conflicting signatures (blkid: ambivalent result)", tags };
  }
  const type = tags.TYPE;
  if (type !== undefined && tags.USAGE === "filesystem") {
    return {
      kind: "filesystem",
      fsType: type,
      ...(tags.UUID === undefined ? {} : { uuid: tags.UUID }),
      ...(tags.LABEL === undefined ? {} : { label: tags.LABEL }),
    };
  }
  if (type !== undefined)
    return { kind: "other", description: `${type} (${tags.USAGE ?? "unknown usage"})`, tags };
  if (tags.PTTYPE !== undefined)
    return { kind: "other", description: `a ${tags.PTTYPE} partition table`, tags };
  // blkid said it found something (exit 0) but named nothing we recognise: not blank.
  return { kind: "other", description: "an unrecognised signature", tags };
}

export async function probeFilesystem(
  device: string,
  options: { runner?: CommandRunner } = {},
): Promise<DeviceContent> {
  const run = options.runner ?? runCommand;
  const result = await run({
    command: "blkid",
    args: ["-p", "-o", "export", "--", device],
    acceptExitCodes: [BLKID_NOTHING_FOUND, BLKID_AMBIVALENT],
    timeoutMs: 30_000,
  });
  const content = classifyBlkid(result.exitCode, result.stdout);
  if (content.kind === "blank" && result.stdout.trim() !== "") {
    throw new SnapblockError(
      "INTERNAL",
      `blkid said ${device} is blank but printed: ${result.stdout.trim()}`,
    );
  }
  return content;
}
