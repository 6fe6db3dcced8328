import path from "node:path";
import { DEFAULT_PLUGIN_NAME, socketPathOf, validatePluginName } from "../pkg/csi/index.js";
import { validateNodeId } from "../pkg/engine-api/index.js";
import type { DataIo } from "../pkg/engine/index.js";
import { isSnapblockError } from "../pkg/errors/index.js";
import { LOG_LEVELS, type LogLevel } from "../pkg/log/index.js";
import { DEFAULT_DEVICE_SERIES, DEFAULT_METRICS_ADDRESS, parseMetricsAddress } from "../pkg/metrics/index.js";
import { DEFAULT_DEAD_CONN_TIMEOUT_SECONDS } from "../pkg/attach/index.js";
import { sizeFlag } from "./size-flag.js";
import { UsageError } from "./usage-error.js";
import { HELP_FLAG, type FlagSpec } from "./verb-spec.js";

/**
 * The flags `local`, `node` and `controller` share, declared once, and the pure readers that turn
 * their text into checked values (a usage error, naming the flag, for anything else).
 */
export const PROCESS_FLAGS = {
  "plugin-name": { type: "string", value: "NAME", default: DEFAULT_PLUGIN_NAME, help: "CSI driver name" },
  "metrics-address": {
    type: "string",
    value: "A",
    default: DEFAULT_METRICS_ADDRESS,
    help: "serve Prometheus /metrics on HOST:PORT, or none",
  },
  "log-level": { type: "string", value: "LEVEL", default: "info", help: "debug, info, warn or error" },
  "shutdown-grace": {
    type: "string",
    value: "SEC",
    default: "30",
    help: "how long calls in flight may finish on SIGINT/SIGTERM",
  },
  help: HELP_FLAG,
} as const satisfies Record<string, FlagSpec>;

/** The flags of a process that owns a pool (`local`, `node`). */
export const POOL_FLAGS = {
  "pool-size": {
    type: "string",
    value: "SIZE",
    defaultText: "80% of the free disk space, at most 64G",
    help: "size of a new pool",
  },
  "chunk-size": { type: "string", value: "SIZE", defaultText: "64K", help: "chunk size of a new pool" },
  overcommit: {
    type: "string",
    value: "RATIO",
    default: "1",
    help: "volume sizes may add up to RATIO x pool size (1: no overcommit)",
  },
  "path-root": {
    type: "string",
    value: "DIR",
    multiple: true,
    help: "only accept staging/target paths inside DIR",
  },
  "max-volumes": {
    type: "string",
    value: "N",
    default: "0",
    help: "NodeGetInfo max_volumes_per_node (0: the CO decides)",
  },
  attach: {
    type: "string",
    value: "KIND",
    default: "auto",
    help: "node block path: auto, nbd-client, nbdfuse-loop, or none (stage/publish answer UNIMPLEMENTED)",
  },
  "nbd-dead-conn-timeout": {
    type: "string",
    value: "SEC",
    default: String(DEFAULT_DEAD_CONN_TIMEOUT_SECONDS),
    help: "kernel nbd devices (attached through snapblock-nbd-netlink) hold I/O this long for the data plane to come back after a restart, then fail it",
  },
  "data-io": {
    type: "string",
    value: "MODE",
    default: "buffered",
    help: "the pool's data file through the page cache (buffered), bypassing it (direct, O_DIRECT), or direct for requests of 256K and more (hybrid)",
  },
  "metrics-volume-series": {
    type: "string",
    value: "N",
    default: String(DEFAULT_DEVICE_SERIES),
    help: 'volumes (and snapshots) with metric series of their own; more share "_other"; 0: none',
  },
} as const satisfies Record<string, FlagSpec>;

/**
 * The engine service's transport (`node`, `controller`); engine-tls-setup.ts turns them into
 * TLS material (docs/cluster.md, "Identities").
 */
export const TLS_FLAGS = {
  "tls-ca": { type: "string", value: "FILE", help: "CA of the engine service (PEM)" },
  "tls-cert": {
    type: "string",
    value: "FILE",
    help: "this process's certificate (PEM), naming this node or the controller",
  },
  "tls-key": { type: "string", value: "FILE", help: "this process's private key (PEM)" },
  "insecure-loopback": {
    type: "boolean",
    default: false,
    help: "plaintext engine service, on loopback addresses only (tests, one machine)",
  },
} as const satisfies Record<string, FlagSpec>;

export type AttachKind = "auto" | "nbd-client" | "nbdfuse-loop" | "none";

export interface ProcessConfig {
  pluginName: string;
  /** undefined: no /metrics endpoint. */
  metricsAddress: { host: string; port: number } | undefined;
  logLevel: LogLevel;
  graceMs: number;
}

export interface PoolConfig {
  dataDir: string;
  socketPath: string;
  nodeId: string;
  /** undefined: worked out from the free disk space when the pool is made. */
  poolSize: number | undefined;
  chunkSize: number | undefined;
  overcommit: number;
  pathRoots: string[];
  maxVolumes: number;
  attach: AttachKind;
  /** Dead-connection timeout of kernel nbd devices, in whole seconds. */
  nbdDeadConnTimeoutSeconds: number;
  dataIo: DataIo;
  deviceSeries: number;
}

type ProcessValues = {
  "plugin-name": string;
  "metrics-address": string;
  "log-level": string;
  "shutdown-grace": string;
};

export function processConfig(values: ProcessValues): ProcessConfig {
  return {
    pluginName: usage(() => validatePluginName(values["plugin-name"]), "--plugin-name"),
    metricsAddress: usage(() => parseMetricsAddress(values["metrics-address"]), "--metrics-address"),
    logLevel: logLevelFlag(values["log-level"]),
    graceMs: secondsFlag(values["shutdown-grace"], "--shutdown-grace", { zero: true }),
  };
}

export function poolConfig(
  values: {
    "node-id": string;
    data: string;
    endpoint?: string | undefined;
    "pool-size"?: string | undefined;
    "chunk-size"?: string | undefined;
    overcommit: string;
    "path-root"?: string[] | undefined;
    "max-volumes": string;
    attach: string;
    "nbd-dead-conn-timeout": string;
    "data-io": string;
    "metrics-volume-series": string;
  },
  cwd: string,
): PoolConfig {
  const dataDir = path.resolve(cwd, values.data);
  const overcommit = Number(values.overcommit);
  if (!(overcommit >= 1) || !Number.isFinite(overcommit))
    throw new UsageError(`--overcommit ${values.overcommit}: a number >= 1`);
  const attach = values.attach;
  if (!["auto", "nbd-client", "nbdfuse-loop", "none"].includes(attach))
    throw new UsageError(`--attach ${attach}: use auto, nbd-client, nbdfuse-loop or none`);
  const dataIo = values["data-io"];
  if (dataIo !== "buffered" && dataIo !== "direct" && dataIo !== "hybrid")
    throw new UsageError(`--data-io ${dataIo}: use buffered, direct or hybrid`);
  return {
    dataDir,
    socketPath: socketPathOf(values.endpoint ?? `unix://${path.join(dataDir, "csi.sock")}`, cwd),
    nodeId: usage(() => validateNodeId(values["node-id"]), "--node-id"),
    poolSize: values["pool-size"] === undefined ? undefined : sizeFlag(values["pool-size"], "--pool-size"),
    chunkSize:
      values["chunk-size"] === undefined ? undefined : sizeFlag(values["chunk-size"], "--chunk-size"),
    overcommit,
    pathRoots: (values["path-root"] ?? []).map((p) => path.resolve(cwd, p)),
    maxVolumes: wholeNumberFlag(values["max-volumes"], "--max-volumes"),
    attach: attach as AttachKind,
    nbdDeadConnTimeoutSeconds: deadConnFlag(values["nbd-dead-conn-timeout"]),
    dataIo,
    deviceSeries: wholeNumberFlag(values["metrics-volume-series"], "--metrics-volume-series"),
  };
}

/** Whole seconds from 1 to a day: the kernel takes seconds, and 0 would turn reconnecting off. */
function deadConnFlag(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 86400 || text.trim() === "")
    throw new UsageError(`--nbd-dead-conn-timeout ${text}: whole seconds from 1 to 86400`);
  return n;
}

export function logLevelFlag(level: string): LogLevel {
  if (!(LOG_LEVELS as readonly string[]).includes(level))
    throw new UsageError(`--log-level ${level}: use ${LOG_LEVELS.join(", ")}`);
  return level as LogLevel;
}

/** Seconds as milliseconds: > 0, or >= 0 with `zero`. */
export function secondsFlag(text: string, flag: string, options: { zero?: boolean } = {}): number {
  const ms = Number(text) * 1000;
  if (!Number.isFinite(ms) || text.trim() === "" || (options.zero ? ms < 0 : ms <= 0))
    throw new UsageError(`${flag} ${text}: seconds ${options.zero ? ">= 0" : "> 0"}`);
  return ms;
}

export function wholeNumberFlag(text: string, flag: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || text.trim() === "")
    throw new UsageError(`${flag} ${text}: a whole number >= 0`);
  return n;
}

/** A flag checked by a pkg validator: its INVALID_ARGUMENT becomes a usage error naming the flag. */
export function usage<T>(read: () => T, flag: string): T {
  try {
    return read();
  } catch (err) {
    if (isSnapblockError(err, "INVALID_ARGUMENT")) throw new UsageError(`${flag}: ${err.message}`);
    throw err;
  }
}
