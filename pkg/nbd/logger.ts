/**
 * The logger the NBD server writes to: structured fields, one JSON object per line
 * (DESIGN.md section 5). The node plugin passes its own; the default writes warnings and errors
 * to stderr so that unknown backend errors are never silently lost.
 */
export type NbdLogLevel = "debug" | "info" | "warn" | "error";

export type NbdLogFields = Record<string, unknown>;

export interface NbdLogger {
  debug(message: string, fields?: NbdLogFields): void;
  info(message: string, fields?: NbdLogFields): void;
  warn(message: string, fields?: NbdLogFields): void;
  error(message: string, fields?: NbdLogFields): void;
}

const LEVEL_ORDER: Record<NbdLogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface JsonLoggerOptions {
  /** Lowest level written. Default "info". */
  level?: NbdLogLevel;
  /** Where lines go. Default process.stderr. */
  write?: (line: string) => void;
  /** Fields added to every line (e.g. { component: "nbd" }). */
  base?: NbdLogFields;
}

export function createJsonLogger(options: JsonLoggerOptions = {}): NbdLogger {
  const threshold = LEVEL_ORDER[options.level ?? "info"];
  const write = options.write ?? ((line: string) => void process.stderr.write(line));
  const base = options.base ?? { component: "nbd" };
  const log = (level: NbdLogLevel, message: string, fields?: NbdLogFields): void => {
    if (LEVEL_ORDER[level] < threshold) return;
    const record = { time: new Date().toISOString(), level, msg: message, ...base, ...fields };
    write(`${JSON.stringify(record, jsonReplacer)}\n`);
  };
  return {
    debug: (message, fields) => log("debug", message, fields),
    info: (message, fields) => log("info", message, fields),
    warn: (message, fields) => log("warn", message, fields),
    error: (message, fields) => log("error", message, fields),
  };
}

/** Errors and bigints do not serialise by themselves; everything else goes through unchanged. */
function jsonReplacer(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Error) {
    const code = (value as { code?: unknown }).code;
    return { name: value.name, message: value.message, ...(code === undefined ? {} : { code }) };
  }
  return value;
}

export const silentLogger: NbdLogger = Object.freeze({
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
});
