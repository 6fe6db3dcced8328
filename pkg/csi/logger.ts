/**
 * Structured JSON logs (DESIGN.md section 5): one object per line with the CSI method, the
 * volume/snapshot ids, the duration and the result code. Only fields chosen by the call wrapper
 * are logged, never whole requests: requests carry secrets (CSI spec "Secrets Requirements").
 */
export type CsiLogLevel = "debug" | "info" | "warn" | "error";
export type CsiLogFields = Record<string, unknown>;

export interface CsiLogger {
  debug(message: string, fields?: CsiLogFields): void;
  info(message: string, fields?: CsiLogFields): void;
  warn(message: string, fields?: CsiLogFields): void;
  error(message: string, fields?: CsiLogFields): void;
}

const ORDER: Record<CsiLogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface JsonLoggerOptions {
  /** Lowest level written (default "info"). */
  level?: CsiLogLevel;
  /** Where lines go (default: process.stderr). */
  write?: (line: string) => void;
  /** Fields on every line (default { component: "csi" }). */
  base?: CsiLogFields;
}

export function createCsiLogger(options: JsonLoggerOptions = {}): CsiLogger {
  const threshold = ORDER[options.level ?? "info"];
  const write = options.write ?? ((line: string) => void process.stderr.write(line));
  const base = options.base ?? { component: "csi" };
  const log = (level: CsiLogLevel, msg: string, fields?: CsiLogFields): void => {
    if (ORDER[level] < threshold) return;
    write(
      `${JSON.stringify({ time: new Date().toISOString(), level, msg, ...base, ...fields }, replacer)}\n`,
    );
  };
  return {
    debug: (m, f) => log("debug", m, f),
    info: (m, f) => log("info", m, f),
    warn: (m, f) => log("warn", m, f),
    error: (m, f) => log("error", m, f),
  };
}

export const silentCsiLogger: CsiLogger = Object.freeze({
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
});

function replacer(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Error) {
    const code = (value as { code?: unknown }).code;
    const cause = (value as { cause?: unknown }).cause;
    return {
      name: value.name,
      message: value.message,
      ...(code === undefined ? {} : { code }),
      ...(cause instanceof Error ? { cause: { name: cause.name, message: cause.message } } : {}),
    };
  }
  return value;
}
