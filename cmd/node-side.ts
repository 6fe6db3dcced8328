/**
 * What `snapblock local` and `snapblock node` wire the same way: the node's block data path
 * (NBD export -> kernel block device -> mount), the default pool size, and the /metrics server.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import type { Registry } from "prom-client";
import { chooseAttacher } from "../pkg/attach/index.js";
import { unavailableNodeVolumeManager, type NodeVolumeManager } from "../pkg/csi/index.js";
import { isSnapblockError } from "../pkg/errors/index.js";
import { parseMetricsAddress, startMetricsServer, type MetricsServer } from "../pkg/metrics/index.js";
import type { NbdServer } from "../pkg/nbd/index.js";
import { UsageError } from "./usage-error.js";
import type { Logger } from "../pkg/log/index.js";
import type { LocalEngine } from "../pkg/engine-api/index.js";
import { NbdNodeVolumes, type VolumeClaims } from "../pkg/node/index.js";

const MIN_POOL = 64 * 2 ** 20;
const MAX_DEFAULT_POOL = 64 * 2 ** 30;

export function metricsAddressOption(text: string): ReturnType<typeof parseMetricsAddress> {
  try {
    return parseMetricsAddress(text);
  } catch (err) {
    // A bad flag is a usage error (usage text, exit code 2), not a failure of the engine.
    if (isSnapblockError(err, "INVALID_ARGUMENT")) throw new UsageError(`--metrics-address: ${err.message}`);
    throw err;
  }
}

/**
 * Metrics are secondary to the volumes: a taken port (a second instance on one machine, a test run)
 * is logged with what to change, and the process keeps serving CSI.
 */
export async function serveMetrics(o: {
  host: string;
  port: number;
  registry: Registry;
  logger: Logger;
}): Promise<MetricsServer | undefined> {
  try {
    const metrics = await startMetricsServer({
      host: o.host,
      port: o.port,
      registry: o.registry,
      onError: (err) => o.logger.error("collecting metrics failed", { err }),
    });
    o.logger.info("metrics listening", { address: `${metrics.address.host}:${metrics.address.port}` });
    return metrics;
  } catch (err) {
    o.logger.error("cannot serve metrics: running without /metrics (choose another --metrics-address)", {
      err,
    });
    return undefined;
  }
}

export async function nodeDataPath(o: {
  /** The command, for messages: "local" or "node". */
  mode: string;
  attach: string;
  dataDir: string;
  engine: LocalEngine;
  nbd: NbdServer;
  /** Shared with the NBD exports for people (local mode): one user of a volume at a time. */
  claims?: VolumeClaims;
  logger: Logger;
}): Promise<NodeVolumeManager> {
  if (o.attach === "none")
    return unavailableNodeVolumeManager(`snapblock ${o.mode} was started with --attach none`);
  try {
    const chosen = await chooseAttacher({
      stateDir: path.join(o.dataDir, "attach"),
      prefer: o.attach as "auto" | "nbd-client" | "nbdfuse-loop",
    });
    o.logger.info("node block path", { kind: chosen.attacher.kind, reason: chosen.reason });
    return new NbdNodeVolumes({
      volumes: o.engine,
      nbd: o.nbd,
      attacher: chosen.attacher,
      socketDir: path.join(o.dataDir, "nbd"),
      ...(o.claims ? { claims: o.claims } : {}),
      logger: o.logger,
    });
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    o.logger.warn("no node block path on this machine: NodeStage/Publish will answer UNIMPLEMENTED", {
      reason,
    });
    return unavailableNodeVolumeManager(reason);
  }
}

/** 80% of the free space of the data directory's filesystem, between 64 MiB and 64 GiB. */
export async function defaultPoolSize(dir: string): Promise<number> {
  const stat = await fs.statfs(dir);
  const free = stat.bavail * stat.bsize;
  const size = Math.min(MAX_DEFAULT_POOL, Math.floor((free * 0.8) / 2 ** 20) * 2 ** 20);
  return Math.max(MIN_POOL, size);
}
