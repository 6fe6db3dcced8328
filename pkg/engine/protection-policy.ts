import { SnapblockError } from "../errors/index.js";

/**
 * A volume's protection policy: recovery points taken every `interval` of the first (finest)
 * tier, and a thinned history, e.g. "1s for 10m, 1m for 1h, 1h for 1d, 1d for 7d" (docs/protection.md).
 *
 * Rules, so that a policy means one thing: 1 to 8 tiers; every interval and window a whole number
 * of seconds (down to 1s); a window at least its interval; each tier coarser (larger interval)
 * and longer (larger window) than the one before it.
 */
export interface ProtectionTier {
  intervalMs: number;
  windowMs: number;
}

export interface ProtectionPolicy {
  tiers: ProtectionTier[];
  /** The canonical text (formatPolicy of the tiers): what is stored and shown. */
  text: string;
}

export const MAX_TIERS = 8;
/** Windows beyond ten years are refused: nothing else in the pool plans that far. */
const MAX_WINDOW_MS = 10 * 365 * 86_400_000;

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
const DURATION = /^(\d{1,9})(s|m|h|d|w)$/;
const EXAMPLE = '"1s for 10m, 1m for 1h, 1h for 1d, 1d for 7d"';

/** "off" (or an empty string) is no policy: undefined. Anything else is parsed or refused. */
export function parseProtectionPolicy(text: string): ProtectionPolicy | undefined {
  if (typeof text !== "string") throw invalid("the protection policy must be a string");
  const trimmed = text.trim();
  if (trimmed === "" || trimmed.toLowerCase() === "off") return undefined;
  const parts = trimmed.split(",").map((p) => p.trim());
  if (parts.length > MAX_TIERS)
    throw invalid(`protection policy has ${parts.length} tiers; at most ${MAX_TIERS}`);
  const tiers: ProtectionTier[] = [];
  for (const part of parts) {
    const words = part.split(/\s+/);
    if (words.length !== 3 || words[1]!.toLowerCase() !== "for") {
      throw invalid(`protection policy tier "${part}" is not "<interval> for <window>" (e.g. ${EXAMPLE})`);
    }
    const intervalMs = parseDuration(words[0]!, part);
    const windowMs = parseDuration(words[2]!, part);
    if (windowMs < intervalMs) {
      throw invalid(`protection policy tier "${part}": the window must be at least the interval`);
    }
    if (windowMs > MAX_WINDOW_MS)
      throw invalid(`protection policy tier "${part}": the window exceeds ten years`);
    const prev = tiers[tiers.length - 1];
    if (prev && intervalMs <= prev.intervalMs) {
      throw invalid(
        `protection policy tier "${part}" must have a larger interval than the tier before it (${formatDuration(prev.intervalMs)})`,
      );
    }
    if (prev && windowMs <= prev.windowMs) {
      throw invalid(
        `protection policy tier "${part}" must have a longer window than the tier before it (${formatDuration(prev.windowMs)})`,
      );
    }
    tiers.push({ intervalMs, windowMs });
  }
  return { tiers, text: formatTiers(tiers) };
}

/** The canonical text of a policy ("off" for none). */
export function formatTiers(tiers: ProtectionTier[]): string {
  if (tiers.length === 0) return "off";
  return tiers.map((t) => `${formatDuration(t.intervalMs)} for ${formatDuration(t.windowMs)}`).join(", ");
}

/** Milliseconds as the largest unit that divides them exactly ("90s", "10m", "7d"). */
export function formatDuration(ms: number): string {
  for (const unit of ["w", "d", "h", "m", "s"]) {
    const size = UNITS[unit]!;
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

function parseDuration(word: string, part: string): number {
  const m = DURATION.exec(word.toLowerCase());
  if (!m) {
    throw invalid(
      `protection policy tier "${part}": "${word}" is not a duration (a whole number followed by s, m, h, d or w, e.g. 30s)`,
    );
  }
  const ms = Number(m[1]) * UNITS[m[2]!]!;
  if (ms < 1000) throw invalid(`protection policy tier "${part}": durations start at 1s`);
  return ms;
}

function invalid(message: string): SnapblockError {
  return new SnapblockError("INVALID_ARGUMENT", message);
}
