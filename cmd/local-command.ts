import { promises as fs } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { NbdServer, type NbdStats } from "../pkg/nbd/index.js";
import type { PoolStats } from "../pkg/engine/index.js";
import {
  CsiServer,
  DEFAULT_PLUGIN_NAME,
  NodeService,
  controllerHandlers,
  identityHandlers,
  snapshotMetadataHandlers,
  socketPathOf,
  validatePluginName,
} from "../pkg/csi/index.js";
import { UsageError, formatByteSize, parseByteSize } from "./byte-size.js";
import {
  CsiMetrics,
  DEFAULT_DEVICE_SERIES,
  DEFAULT_METRICS_ADDRESS,
  EngineMetrics,
  NbdMetrics,
  createMetricsRegistry,
} from "../pkg/metrics/index.js";
import type { CliContext } from "./cli-context.js";
import { DEFAULT_DATA_DIR } from "./operator-connection.js";
import { packageVersion } from "./package-version.js";
import { defaultPoolSize, metricsAddressOption, nodeDataPath, serveMetrics } from "./node-side.js";
import { createLogger, type LogLevel } from "../pkg/log/index.js";
import { LocalEngine, validateNodeId } from "../pkg/engine-api/index.js";
import { NbdNodeVolumes } from "../pkg/node/index.js";

export const LOCAL_USAGE = `snapblock local [options]

Runs Identity, Controller and Node on one unix socket over one pool: no Kubernetes needed.

  --data DIR            data directory: pool, CSI metadata, socket (default ./${DEFAULT_DATA_DIR})
  --endpoint EP         CSI socket (default unix://DIR/csi.sock)
  --node-id ID          node id, part of every volume id and the topology (default "local")
  --pool-size SIZE      size of a new pool (default: 80% of the free disk space, at most 64G)
  --chunk-size SIZE     chunk size of a new pool (default 64K)
  --overcommit RATIO    volume sizes may add up to RATIO x pool size (default 1: no overcommit)
  --plugin-name NAME    CSI driver name (default ${DEFAULT_PLUGIN_NAME})
  --path-root DIR       only accept staging/target paths inside DIR (repeatable)
  --max-volumes N       NodeGetInfo max_volumes_per_node (default 0: the CO decides)
  --attach KIND         node block path: auto, nbd-client, nbdfuse-loop, or none (no Node data
                        path: stage/publish answer UNIMPLEMENTED) (default auto)
  --log-level LEVEL     debug, info, warn or error (default info)
  --shutdown-grace SEC  how long calls in flight may finish on SIGINT/SIGTERM (default 30)
  --metrics-address A   serve Prometheus /metrics on HOST:PORT, or none (default ${DEFAULT_METRICS_ADDRESS})
  --metrics-volume-series N
                        volumes (and snapshots) with metric series of their own; more share the
                        "_other" series; 0 turns per-volume series off (default ${DEFAULT_DEVICE_SERIES})
`;

export async function localCommand(ctx: CliContext): Promise<number> {
  const { values } = parseArgs({
    args: ctx.args,
    options: {
      data: { type: "string" },
      endpoint: { type: "string" },
      "node-id": { type: "string", default: "local" },
      "pool-size": { type: "string" },
      "chunk-size": { type: "string" },
      overcommit: { type: "string", default: "1" },
      "plugin-name": { type: "string", default: DEFAULT_PLUGIN_NAME },
      "path-root": { type: "string", multiple: true },
      "max-volumes": { type: "string", default: "0" },
      "log-level": { type: "string", default: "info" },
      attach: { type: "string", default: "auto" },
      "shutdown-grace": { type: "string", default: "30" },
      "metrics-address": { type: "string", default: DEFAULT_METRICS_ADDRESS },
      "metrics-volume-series": { type: "string", default: String(DEFAULT_DEVICE_SERIES) },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    ctx.stdout(LOCAL_USAGE);
    return 0;
  }
  const dataDir = path.resolve(ctx.cwd, values.data ?? DEFAULT_DATA_DIR);
  const socketPath = socketPathOf(values.endpoint ?? `unix://${path.join(dataDir, "csi.sock")}`, ctx.cwd);
  const nodeId = validateNodeId(values["node-id"]);
  const pluginName = validatePluginName(values["plugin-name"]);
  const overcommit = Number(values.overcommit);
  const maxVolumes = Number(values["max-volumes"]);
  const graceMs = Number(values["shutdown-grace"]) * 1000;
  const level = values["log-level"];
  if (!["debug", "info", "warn", "error"].includes(level))
    throw new UsageError(`--log-level ${level}: use debug, info, warn or error`);
  if (!(overcommit >= 1)) throw new UsageError(`--overcommit ${values.overcommit}: a number >= 1`);
  if (!Number.isInteger(maxVolumes) || maxVolumes < 0)
    throw new UsageError(`--max-volumes ${values["max-volumes"]}: a whole number >= 0`);
  if (!(graceMs >= 0)) throw new UsageError(`--shutdown-grace ${values["shutdown-grace"]}: seconds >= 0`);
  const deviceSeries = Number(values["metrics-volume-series"]);
  if (!Number.isInteger(deviceSeries) || deviceSeries < 0)
    throw new UsageError(`--metrics-volume-series ${values["metrics-volume-series"]}: a whole number >= 0`);
  const metricsAddress = metricsAddressOption(values["metrics-address"]);
  const pathRoots = (values["path-root"] ?? []).map((p) => path.resolve(ctx.cwd, p));
  const attach = values.attach;
  if (!["auto", "nbd-client", "nbdfuse-loop", "none"].includes(attach)) {
    throw new UsageError(`--attach ${attach}: use auto, nbd-client, nbdfuse-loop or none`);
  }

  const logger = createLogger({
    level: level as LogLevel,
    write: ctx.stderr,
    base: { component: "snapblock-local", node: nodeId },
  });
  await fs.mkdir(dataDir, { recursive: true, mode: 0o700 });
  const poolSize = values["pool-size"]
    ? parseByteSize(values["pool-size"], "--pool-size")
    : await defaultPoolSize(dataDir);
  const chunkSize = values["chunk-size"] ? parseByteSize(values["chunk-size"], "--chunk-size") : undefined;

  // Metrics first: the engine, NBD and CSI pieces take their observers at construction, and the
  // scrape-time readers below only run once the pieces exist.
  const registry = createMetricsRegistry();
  const engineMetrics = new EngineMetrics({
    registry,
    pool: "local",
    stats: (): PoolStats | undefined => engine.poolStats(),
    maxDeviceSeries: deviceSeries,
  });
  const nbdMetrics = new NbdMetrics({ registry, stats: (): NbdStats => nbd.stats() });
  const csiMetrics = new CsiMetrics({ registry });
  const engine = new LocalEngine({
    nodeId,
    poolDir: path.join(dataDir, "pool"),
    metadataFile: path.join(dataDir, "csi-metadata.json"),
    createIfMissing: { sizeBytes: poolSize, ...(chunkSize ? { chunkSize } : {}) },
    overcommitRatio: overcommit,
    observer: engineMetrics.observer,
  });
  const nbd = new NbdServer({
    logger: createLogger({
      level: level === "debug" ? "info" : "warn",
      write: ctx.stderr,
      base: { component: "nbd", node: nodeId },
    }),
    observer: nbdMetrics.observer,
  });
  const nodeVolumes = await nodeDataPath({ mode: "local", attach, dataDir, engine, nbd, logger });
  const server = await CsiServer.start({
    socketPath,
    logger,
    identity: identityHandlers({
      pluginName,
      vendorVersion: packageVersion(),
      controller: true,
      snapshotMetadata: true,
      ready: () => engine.isReady(),
      logger,
      observer: csiMetrics.observer,
    }),
    controller: controllerHandlers({ engine, logger, observer: csiMetrics.observer }),
    snapshotMetadata: snapshotMetadataHandlers({ engine, logger, observer: csiMetrics.observer }),
    node: new NodeService({
      engine,
      volumes: nodeVolumes,
      maxVolumesPerNode: maxVolumes,
      pathRoots,
      logger,
      observer: csiMetrics.observer,
    }).handlers(),
  });
  // After the CSI server: serveMetrics never fails, so nothing is left listening if CSI cannot start.
  const metrics = metricsAddress ? await serveMetrics({ ...metricsAddress, registry, logger }) : undefined;

  let stopping: Promise<number> | undefined;
  const stop = (signal: string): Promise<number> => {
    stopping ??= (async () => {
      logger.info("shutting down", { signal });
      let code = 0;
      await server.shutdown(graceMs);
      try {
        // In-flight NBD requests finish and every export is flushed before the pool closes.
        await nbd.shutdown();
        await nodeVolumes.close();
        await engine.close();
        await metrics?.close();
      } catch (err) {
        logger.error("closing the pool failed", { err });
        code = 1;
      }
      logger.info("stopped", { exitCode: code });
      return code;
    })();
    return stopping;
  };
  const stopped = new Promise<number>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        logger.warn("second signal: exiting without waiting", { signal });
        process.exit(1);
      }
      void stop(signal).then(resolve);
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
  });

  try {
    const { created } = await engine.open();
    if (nodeVolumes instanceof NbdNodeVolumes) await nodeVolumes.resume();
    logger.info(created ? "created pool" : "opened pool", {
      data: dataDir,
      socket: socketPath,
      ...(created ? { poolSize: formatByteSize(poolSize) } : {}),
    });
  } catch (err) {
    logger.error("cannot open the pool", { err, data: dataDir });
    await server.shutdown(0);
    await metrics?.close();
    return 1;
  }
  return stopped;
}

/**
 * The Node data path: NBD export (pkg/nbd) -> kernel block device (pkg/attach, the kind chosen
 * for this machine) -> filesystem and mounts (pkg/mount). When no block path is available here
 * (or --attach none), the Node service still validates and answers UNIMPLEMENTED with the reason.
 */
