import { parseArgs, type ParseArgsConfig } from "node:util";
import { UsageError } from "./usage-error.js";

/**
 * One command line of the binary ("local", "volume create"), declared once: the parser, the
 * usage line printed with every usage error, and the --help text with each flag's default all
 * come from the same declaration, so they cannot disagree.
 */
export interface FlagSpec {
  type: "string" | "boolean";
  short?: string;
  multiple?: boolean;
  /** Handed to the parser and shown as "(default X)". */
  default?: string | boolean;
  /** Shown as "(default ...)" when the default is worked out at run time. */
  defaultText?: string;
  /** Placeholder of the value in the help ("SIZE"). */
  value?: string;
  help: string;
}

export interface VerbSpec<F extends Record<string, FlagSpec> = Record<string, FlagSpec>> {
  /** As typed: "local", "volume create". */
  command: string;
  /** Positional arguments, "[NAME]" when optional. */
  args?: readonly string[];
  /** One line: what the command does. */
  summary: string;
  /** More, printed under the usage line by --help. */
  description?: string;
  flags: F;
}

type FlagValue<S extends FlagSpec> = S["type"] extends "boolean"
  ? S["multiple"] extends true
    ? boolean[]
    : boolean
  : S["multiple"] extends true
    ? string[]
    : string;

/** The parsed values: a flag with a default always has a value, others may be undefined. */
export type FlagValues<F extends Record<string, FlagSpec>> = {
  [K in keyof F]: F[K] extends { default: string | boolean } ? FlagValue<F[K]> : FlagValue<F[K]> | undefined;
};

export interface ParsedVerb<F extends Record<string, FlagSpec>> {
  values: FlagValues<F>;
  positionals: string[];
  /** --help was given: print help(spec) and do nothing else. */
  help: boolean;
}

/** The flag every command takes. */
export const HELP_FLAG = {
  type: "boolean",
  short: "h",
  default: false,
  help: "this help",
} as const satisfies FlagSpec;

export function defineVerb<const F extends Record<string, FlagSpec>>(spec: VerbSpec<F>): VerbSpec<F> {
  return spec;
}

/**
 * Parses argv against the spec. Mistakes are UsageErrors that say what is wrong in a sentence,
 * followed by the command's usage line. `--size -5G` is taken as the value it looks like (and
 * refused by the size check with a sentence), not as an unknown option.
 */
export function parseVerb<F extends Record<string, FlagSpec>>(
  spec: VerbSpec<F>,
  argv: string[],
): ParsedVerb<F> {
  const options = Object.fromEntries(
    Object.entries(spec.flags).map(([name, f]) => [
      name,
      {
        type: f.type,
        ...(f.short === undefined ? {} : { short: f.short }),
        ...(f.multiple === undefined ? {} : { multiple: f.multiple }),
        ...(f.default === undefined ? {} : { default: f.default }),
      },
    ]),
  ) as ParseArgsConfig["options"];
  let parsed: { values: Record<string, unknown>; positionals: string[] };
  try {
    parsed = parseArgs({ args: joinDashValues(spec, argv), options, allowPositionals: true, strict: true });
  } catch (err) {
    throw usageError(spec, parseArgsSentence(err));
  }
  const help = parsed.values.help === true;
  if (!help) checkPositionals(spec, parsed.positionals);
  return { values: parsed.values as FlagValues<F>, positionals: parsed.positionals, help };
}

/** "usage: snapblock volume create NAME [options]". */
export function usageLine(spec: VerbSpec): string {
  const args = (spec.args ?? []).join(" ");
  const options = Object.keys(spec.flags).some((f) => f !== "help") ? " [options]" : "";
  return `usage: snapblock ${spec.command}${args ? ` ${args}` : ""}${options}`;
}

/** --help: usage line, summary, description, every flag with its default. */
export function helpText(spec: VerbSpec): string {
  const rows = Object.entries(spec.flags).map(([name, f]) => {
    const left = `  ${f.short ? `-${f.short}, ` : ""}--${name}${f.value ? ` ${f.value}` : ""}`;
    const shown =
      f.defaultText ?? (typeof f.default === "string" && f.default !== "" ? f.default : undefined);
    const right = `${f.help}${shown === undefined ? "" : ` (default ${shown})`}${f.multiple ? " (repeatable)" : ""}`;
    return { left, right };
  });
  const width = Math.min(28, Math.max(...rows.map((r) => r.left.length)) + 2);
  const lines = rows.map(({ left, right }) =>
    left.length + 2 > width ? `${left}\n${" ".repeat(width)}${right}` : `${left.padEnd(width)}${right}`,
  );
  return [
    usageLine(spec),
    "",
    spec.summary,
    ...(spec.description ? ["", spec.description] : []),
    "",
    "options:",
    ...lines,
    "",
  ].join("\n");
}

/**
 * Runs one verb of a command group: parses argv against its spec, prints the help for --help,
 * otherwise hands the parsed values and positionals to `handle`.
 */
export function runVerb(ctx: { args: string[]; stdout: (text: string) => void }) {
  return async <F extends Record<string, FlagSpec>>(
    spec: VerbSpec<F>,
    handle: (values: FlagValues<F>, positionals: string[]) => Promise<number>,
  ): Promise<number> => {
    const parsed = parseVerb(spec, ctx.args);
    if (parsed.help) {
      ctx.stdout(helpText(spec));
      return 0;
    }
    try {
      return await handle(parsed.values, parsed.positionals);
    } catch (err) {
      // Every mistake on the command line comes with the verb's usage, whoever noticed it.
      if (err instanceof UsageError && !err.message.includes(`\n${usageLine(spec)}`))
        throw usageError(spec, err.message);
      throw err;
    }
  };
}

export function usageError(spec: VerbSpec, sentence: string): UsageError {
  return new UsageError(
    `${sentence}\n${usageLine(spec)}\n(snapblock ${spec.command} --help for the options)`,
  );
}

function checkPositionals(spec: VerbSpec, positionals: string[]): void {
  const args = spec.args ?? [];
  const required = args.filter((a) => !a.startsWith("["));
  if (positionals.length < required.length) {
    const missing = required.slice(positionals.length);
    throw usageError(spec, `snapblock ${spec.command} needs ${missing.join(" and ")}`);
  }
  if (positionals.length > args.length) {
    const extra = positionals.slice(args.length).map((p) => JSON.stringify(p));
    throw usageError(spec, `unexpected argument${extra.length > 1 ? "s" : ""} ${extra.join(" ")}`);
  }
}

/**
 * A string flag followed by something that starts with "-" but is no flag of this command
 * ("--size -5G"): that is the flag's value, which util.parseArgs would otherwise call ambiguous.
 */
function joinDashValues(spec: VerbSpec, argv: string[]): string[] {
  const isFlag = (token: string) => {
    const name = token.replace(/^--?/, "").split("=")[0] ?? "";
    return token.startsWith("--")
      ? Object.hasOwn(spec.flags, name)
      : Object.values(spec.flags).some((f) => f.short === name);
  };
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]!;
    const next = argv[i + 1];
    const name = token.startsWith("--") && !token.includes("=") ? token.slice(2) : undefined;
    if (
      name !== undefined &&
      spec.flags[name]?.type === "string" &&
      next !== undefined &&
      next.startsWith("-") &&
      next !== "-" &&
      !isFlag(next)
    ) {
      out.push(`${token}=${next}`);
      i++;
    } else out.push(token);
  }
  return out;
}

/** util.parseArgs messages, as sentences about this command. */
function parseArgsSentence(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: string }).code;
  const option = /option '(-[^' ]+)/i.exec(message)?.[1];
  if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") return `unknown option ${option ?? message}`;
  if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
    if (/argument missing|ambiguous/.test(message)) return `${option ?? "an option"} needs a value`;
    if (/does not take an argument/.test(message)) return `${option ?? "an option"} takes no value`;
  }
  return message;
}

/** The usage of a command group ("snapblock volume <verb>"): one line per verb. */
export function groupUsage(group: string, verbs: Record<string, VerbSpec>): string {
  const rows = Object.values(verbs).map((v) => [
    `  ${v.command.slice(group.length + 1)}${(v.args ?? []).length > 0 ? ` ${(v.args ?? []).join(" ")}` : ""}`,
    v.summary,
  ]);
  const width = Math.max(...rows.map(([l]) => l!.length)) + 2;
  return [
    `snapblock ${group} <verb> [options]`,
    "",
    ...rows.map(([l, r]) => `${l!.padEnd(width)}${r}`),
    "",
    `Run "snapblock ${group} <verb> --help" for a verb's options and defaults.`,
    "",
  ].join("\n");
}
