/**
 * What `snapblock local` and `snapblock node` wire the same way: metrics, the pool, the NBD
 * server and the node's block data path (NBD export -> kernel block device -> mount), and the
 * /metrics server.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import type { Registry } from "prom-client";
import { chooseAttacher } from "../pkg/attach/index.js";
import { formatByteSize } from "../pkg/byte-size/index.js";
import { unavailableNodeVolumeManager, type NodeVolumeManager } from "../pkg/csi/index.js";
import type { PoolStats } from "../pkg/engine/index.js";
import { LocalEngine, type LocalEngineOptions } from "../pkg/engine-api/index.js";
import { createLogger, type Logger, type LogLevel } from "../pkg/log/index.js";
import {
  CsiMetrics,
  EngineMetrics,
  AttachmentMetrics,
  NbdMetrics,
  createMetricsRegistry,
  startMetricsServer,
  type MetricsServer,
} from "../pkg/metrics/index.js";
import { NbdServer, type NbdStats } from "../pkg/nbd/index.js";
import {
  LocalDataPlane,
  NbdNodeVolumes,
  VolumeClaims,
  type VolumeAttachmentFacts,
} from "../pkg/node/index.js";
import type { PoolConfig } from "./common-flags.js";

const MIN_POOL = 64 * 2 ** 20;
const MAX_DEFAULT_POOL = 64 * 2 ** 30;

export interface NodeSide {
  registry: Registry;
  csiMetrics: CsiMetrics;
  engine: LocalEngine;
  nbd: NbdServer;
  /** The data plane's block path: exports, attached devices, the snapshot freeze. */
  dataPlane: LocalDataPlane;
  nodeVolumes: NodeVolumeManager;
  /** Every block device attached on this node, with its health (none without a block path). */
  attachments: () => Promise<VolumeAttachmentFacts[]>;
  /** Shared by the node path and the NBD exports for people: one user of a volume at a time. */
  claims: VolumeClaims;
  /** The size a new pool gets (--pool-size, or worked out from the free space). */
  poolSize: number;
}

/** Metrics first (the pieces take their observers at construction), then pool, NBD, data path. */
export async function buildNodeSide(o: {
  /** The command, for messages and the metrics' pool label. */
  mode: "local" | "node";
  pool: PoolConfig;
  /** Staging and target paths must resolve inside these (default: --path-root). */
  pathRoots?: readonly string[];
  logLevel: LogLevel;
  logger: Logger;
  stderr: (text: string) => void;
  /** Node mode: where snapshots on other nodes are read from, and at what rate. */
  engine?: Pick<LocalEngineOptions, "remote" | "pullBytesPerSecond">;
}): Promise<NodeSide> {
  const { pool } = o;
  await fs.mkdir(pool.dataDir, { recursive: true, mode: 0o700 });
  const poolSize = pool.poolSize ?? (await defaultPoolSize(pool.dataDir));
  const registry = createMetricsRegistry();
  const engineMetrics = new EngineMetrics({
    registry,
    pool: o.mode === "local" ? "local" : pool.nodeId,
    stats: (): PoolStats | undefined => engine.poolStats(),
    maxDeviceSeries: pool.deviceSeries,
  });
  const nbdMetrics = new NbdMetrics({ registry, stats: (): NbdStats => nbd.stats() });
  const engine = new LocalEngine({
    nodeId: pool.nodeId,
    poolDir: path.join(pool.dataDir, "pool"),
    metadataFile: path.join(pool.dataDir, "csi-metadata.json"),
    createIfMissing: { sizeBytes: poolSize, ...(pool.chunkSize ? { chunkSize: pool.chunkSize } : {}) },
    overcommitRatio: pool.overcommit,
    dataIo: pool.dataIo,
    observer: engineMetrics.observer,
    logger: o.logger,
    ...o.engine,
  });
  const nbd = new NbdServer({
    logger: createLogger({
      level: o.logLevel === "debug" ? "info" : "warn",
      write: o.stderr,
      base: { component: "nbd", node: pool.nodeId },
    }),
    observer: nbdMetrics.observer,
  });
  const claims = new VolumeClaims();
  const dataPlane = await nodeDataPlane({ ...o, engine, nbd, claims });
  const nodeVolumes = await dataPlane.info().then((info) =>
    info.attacherKind === undefined
      ? unavailableNodeVolumeManager(info.reason)
      : new NbdNodeVolumes({
          dataPlane,
          publicationDir: path.join(pool.dataDir, "published"),
          pathRoots: o.pathRoots ?? pool.pathRoots,
          logger: o.logger,
        }),
  );
  const attachments = (): Promise<VolumeAttachmentFacts[]> => dataPlane.attachments();
  new AttachmentMetrics({ registry, attachments });
  return {
    registry,
    csiMetrics: new CsiMetrics({ registry }),
    engine,
    nbd,
    dataPlane,
    nodeVolumes,
    attachments,
    claims,
    poolSize,
  };
}

/** Opens (or creates) the pool and serves again the exports of staged volumes; false when it cannot (logged). */
export async function openPool(side: NodeSide, pool: PoolConfig, logger: Logger): Promise<boolean> {
  try {
    const { created, recovery } = await side.engine.open();
    if (recovery.replayedBatches > 0 || recovery.tornBytes > 0)
      logger.warn("the pool was not closed cleanly last time: replayed its journal", {
        data: pool.dataDir,
        ...recovery,
      });
    await side.dataPlane.resume();
    await side.dataPlane.watchHealth();
    logger.info(created ? "created pool" : "opened pool", {
      data: pool.dataDir,
      socket: pool.socketPath,
      ...(created ? { poolSize: formatByteSize(side.poolSize) } : {}),
    });
    return true;
  } catch (err) {
    logger.error("cannot open the pool", { err, data: pool.dataDir });
    return false;
  }
}

/**
 * Metrics are secondary to the volumes: a taken port (a second instance on one machine, a test run)
 * is logged with what to change, and the process keeps serving CSI.
 */
export async function serveMetrics(o: {
  address: { host: string; port: number } | undefined;
  registry: Registry;
  logger: Logger;
}): Promise<MetricsServer | undefined> {
  if (!o.address) return undefined;
  try {
    const metrics = await startMetricsServer({
      host: o.address.host,
      port: o.address.port,
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

/**
 * The node's data plane: NBD export (pkg/nbd) -> kernel block device (pkg/attach, the kind chosen
 * for this machine), and the engine's quiescer (snapshots freeze staged filesystems). When no
 * block path is available here (or --attach none), it says why, and the Node service answers
 * UNIMPLEMENTED with the reason.
 */
async function nodeDataPlane(o: {
  mode: "local" | "node";
  pool: PoolConfig;
  engine: LocalEngine;
  nbd: NbdServer;
  claims: VolumeClaims;
  logger: Logger;
}): Promise<LocalDataPlane> {
  const common = {
    pool: o.engine,
    nbd: o.nbd,
    socketDir: path.join(o.pool.dataDir, "nbd"),
    claims: o.claims,
    logger: o.logger,
  };
  if (o.pool.attach === "none")
    return new LocalDataPlane({
      ...common,
      attacher: { unavailable: `snapblock ${o.mode} was started with --attach none` },
    });
  try {
    const chosen = await chooseAttacher({
      stateDir: path.join(o.pool.dataDir, "attach"),
      prefer: o.pool.attach,
      nbdClient: { deadConnTimeoutSeconds: o.pool.nbdDeadConnTimeoutSeconds },
    });
    o.logger.info("node block path", { kind: chosen.attacher.kind, reason: chosen.reason });
    const dataPlane = new LocalDataPlane({ ...common, attacher: chosen.attacher });
    // Snapshots of volumes staged here with a filesystem are taken with it frozen; volumes whose
    // device here is broken say so in the engine's answers.
    o.engine.useQuiescer(dataPlane);
    o.engine.useAttachmentHealth(dataPlane);
    return dataPlane;
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    o.logger.warn("no node block path on this machine: NodeStage/Publish will answer UNIMPLEMENTED", {
      reason,
    });
    return new LocalDataPlane({ ...common, attacher: { unavailable: reason } });
  }
}

/** 80% of the free space of the data directory's filesystem, between 64 MiB and 64 GiB. */
export async function defaultPoolSize(dir: string): Promise<number> {
  const stat = await fs.statfs(dir);
  const free = stat.bavail * stat.bsize;
  const size = Math.min(MAX_DEFAULT_POOL, Math.floor((free * 0.8) / 2 ** 20) * 2 ** 20);
  return Math.max(MIN_POOL, size);
}
