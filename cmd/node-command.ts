import { promises as fs } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import {
  CsiServer,
  DEFAULT_PLUGIN_NAME,
  NodeService,
  identityHandlers,
  socketPathOf,
  validatePluginName,
} from "../pkg/csi/index.js";
import type { PoolStats } from "../pkg/engine/index.js";
import {
  CsiMetrics,
  DEFAULT_DEVICE_SERIES,
  DEFAULT_METRICS_ADDRESS,
  EngineMetrics,
  NbdMetrics,
  createMetricsRegistry,
} from "../pkg/metrics/index.js";
import { NbdServer, type NbdStats } from "../pkg/nbd/index.js";
import { formatByteSize } from "../pkg/byte-size/index.js";
import { sizeFlag } from "./size-flag.js";
import { UsageError } from "./usage-error.js";
import type { CliContext } from "./cli-context.js";
import { packageVersion } from "./package-version.js";
import { defaultPoolSize, metricsAddressOption, nodeDataPath, serveMetrics } from "./node-side.js";
import { createLogger, type Logger, type LogLevel } from "../pkg/log/index.js";
import { LocalEngine, validateNodeId } from "../pkg/engine-api/index.js";
import { NbdNodeVolumes } from "../pkg/node/index.js";
import { EngineServer, HolderContent, parseHostPort } from "../pkg/engine-service/index.js";
import { NodeAnnouncer, connectKube, type NodeCertificate } from "../pkg/k8s/index.js";
import { nodeTls } from "./engine-tls-setup.js";

export const NODE_USAGE = `snapblock node --node-id ID [options]

The node plugin of cluster mode: owns this node's pool, serves the engine service to the
controller (mutual TLS) and Identity + Node on the kubelet's CSI socket.

  --node-id ID          this node's id: part of every volume id and the topology (required)
  --data DIR            data directory: pool, CSI metadata, NBD sockets (default /var/lib/snapblock)
  --endpoint EP         CSI socket (default unix://DIR/csi.sock)
  --engine-listen ADDR  host:port of the engine service (default 0.0.0.0:7443)
  --tls-ca FILE         CA of the engine service (PEM)        } required unless
  --tls-cert FILE       this node's certificate (PEM)         } --insecure-loopback
  --tls-key FILE        this node's private key (PEM)         }
  --tls-bootstrap       instead of --tls-cert/--tls-key: make a key here and get this node's
                        certificate from the controller's signer (a Kubernetes CSR), renewed
  --insecure-loopback   plaintext engine service; only with a loopback --engine-listen
  --pull-rate-limit SIZE  bytes per second a background copy from other nodes may take
                        (restores from another node's snapshot, replicas; default 0: no limit)
  --announce ADDR       publish ADDR (host:port the controller dials, e.g. $(POD_IP):7443) and the
                        pool's capacity on this node's Node object (snapblock.dev/ annotations)
  --announce-every SEC  how often to refresh the announcement (default 60)
  --pool-size SIZE      size of a new pool (default: 80% of the free disk space, at most 64G)
  --chunk-size SIZE     chunk size of a new pool (default 64K)
  --overcommit RATIO    volume sizes may add up to RATIO x pool size (default 1)
  --plugin-name NAME    CSI driver name (default ${DEFAULT_PLUGIN_NAME})
  --path-root DIR       only accept staging/target paths inside DIR (repeatable)
  --max-volumes N       NodeGetInfo max_volumes_per_node (default 0: the CO decides)
  --attach KIND         auto, nbd-client, nbdfuse-loop, or none (default auto)
  --metrics-address A   serve Prometheus /metrics on HOST:PORT, or none (default ${DEFAULT_METRICS_ADDRESS})
  --metrics-volume-series N
                        volumes (and snapshots) with metric series of their own (default ${DEFAULT_DEVICE_SERIES})
  --log-level LEVEL     debug, info, warn or error (default info)
  --shutdown-grace SEC  how long calls in flight may finish on SIGINT/SIGTERM (default 30)
`;

export async function nodeCommand(ctx: CliContext): Promise<number> {
  const { values } = parseArgs({
    args: ctx.args,
    options: {
      "node-id": { type: "string" },
      data: { type: "string", default: "/var/lib/snapblock" },
      endpoint: { type: "string" },
      "engine-listen": { type: "string", default: "0.0.0.0:7443" },
      "tls-ca": { type: "string" },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
      "tls-bootstrap": { type: "boolean", default: false },
      "pull-rate-limit": { type: "string", default: "0" },
      "insecure-loopback": { type: "boolean", default: false },
      announce: { type: "string" },
      "announce-every": { type: "string", default: "60" },
      "pool-size": { type: "string" },
      "chunk-size": { type: "string" },
      overcommit: { type: "string", default: "1" },
      "plugin-name": { type: "string", default: DEFAULT_PLUGIN_NAME },
      "path-root": { type: "string", multiple: true },
      "max-volumes": { type: "string", default: "0" },
      attach: { type: "string", default: "auto" },
      "log-level": { type: "string", default: "info" },
      "shutdown-grace": { type: "string", default: "30" },
      "metrics-address": { type: "string", default: DEFAULT_METRICS_ADDRESS },
      "metrics-volume-series": { type: "string", default: String(DEFAULT_DEVICE_SERIES) },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    ctx.stdout(NODE_USAGE);
    return 0;
  }
  if (!values["node-id"]) throw new UsageError("--node-id is required (the Kubernetes node name)");
  const nodeId = validateNodeId(values["node-id"]);
  const dataDir = path.resolve(ctx.cwd, values.data);
  const socketPath = socketPathOf(values.endpoint ?? `unix://${path.join(dataDir, "csi.sock")}`, ctx.cwd);
  const pluginName = validatePluginName(values["plugin-name"]);
  const overcommit = Number(values.overcommit);
  const pullRate =
    values["pull-rate-limit"] === "0" ? 0 : sizeFlag(values["pull-rate-limit"], "--pull-rate-limit");
  const maxVolumes = Number(values["max-volumes"]);
  const graceMs = Number(values["shutdown-grace"]) * 1000;
  const level = logLevel(values["log-level"]);
  if (!(overcommit >= 1)) throw new UsageError(`--overcommit ${values.overcommit}: a number >= 1`);
  if (!Number.isInteger(maxVolumes) || maxVolumes < 0)
    throw new UsageError(`--max-volumes ${values["max-volumes"]}: a whole number >= 0`);
  if (!(graceMs >= 0)) throw new UsageError(`--shutdown-grace ${values["shutdown-grace"]}: seconds >= 0`);
  const attach = values.attach;
  if (!["auto", "nbd-client", "nbdfuse-loop", "none"].includes(attach)) {
    throw new UsageError(`--attach ${attach}: use auto, nbd-client, nbdfuse-loop or none`);
  }
  const pathRoots = (values["path-root"] ?? []).map((p) => path.resolve(ctx.cwd, p));
  if (values.announce !== undefined) parseHostPort(values.announce);
  const metricsAddress = metricsAddressOption(values["metrics-address"]);
  const deviceSeries = Number(values["metrics-volume-series"]);
  if (!Number.isInteger(deviceSeries) || deviceSeries < 0)
    throw new UsageError(`--metrics-volume-series ${values["metrics-volume-series"]}: a whole number >= 0`);
  const announceMs = Number(values["announce-every"]) * 1000;
  if (!(announceMs > 0)) throw new UsageError(`--announce-every ${values["announce-every"]}: seconds > 0`);

  const logger = createLogger({
    level,
    write: ctx.stderr,
    base: { component: "snapblock-node", node: nodeId },
  });
  const { transport, bootstrap } = nodeTls(values, { cwd: ctx.cwd, nodeId, dataDir, logger });
  await fs.mkdir(dataDir, { recursive: true, mode: 0o700 });
  const poolSize = values["pool-size"]
    ? sizeFlag(values["pool-size"], "--pool-size")
    : await defaultPoolSize(dataDir);
  const chunkSize = values["chunk-size"] ? sizeFlag(values["chunk-size"], "--chunk-size") : undefined;
  // Metrics first: the engine, NBD and CSI pieces take their observers at construction.
  const registry = createMetricsRegistry();
  const engineMetrics = new EngineMetrics({
    registry,
    pool: nodeId,
    stats: (): PoolStats | undefined => engine.poolStats(),
    maxDeviceSeries: deviceSeries,
  });
  const nbdMetrics = new NbdMetrics({ registry, stats: (): NbdStats => nbd.stats() });
  const csiMetrics = new CsiMetrics({ registry });
  // Snapshots on other nodes are read with this node's own certificate (holders check it).
  const remote = new HolderContent({ transport, logger });
  const engine = new LocalEngine({
    observer: engineMetrics.observer,
    nodeId,
    poolDir: path.join(dataDir, "pool"),
    metadataFile: path.join(dataDir, "csi-metadata.json"),
    createIfMissing: { sizeBytes: poolSize, ...(chunkSize ? { chunkSize } : {}) },
    overcommitRatio: overcommit,
    remote,
    pullBytesPerSecond: pullRate,
    logger,
  });
  const nbd = new NbdServer({
    logger: createLogger({
      level: level === "debug" ? "info" : "warn",
      write: ctx.stderr,
      base: { component: "nbd", node: nodeId },
    }),
    observer: nbdMetrics.observer,
  });
  const nodeVolumes = await nodeDataPath({ mode: "node", attach, dataDir, engine, nbd, logger });

  // The pool opens before anything listens: the engine service must never answer CLOSED to the
  // controller for long, and the CSI socket's Probe says ready only once the pool is open.
  try {
    const { created } = await engine.open();
    if (nodeVolumes instanceof NbdNodeVolumes) await nodeVolumes.resume();
    logger.info(created ? "created pool" : "opened pool", {
      data: dataDir,
      ...(created ? { poolSize: formatByteSize(poolSize) } : {}),
    });
  } catch (err) {
    logger.error("cannot open the pool", { err, data: dataDir });
    return 1;
  }
  let engineServer: EngineServer;
  let csi: CsiServer;
  let certificate: NodeCertificate | undefined;
  try {
    if (bootstrap) {
      certificate = bootstrap(await connectKube());
      await certificate.ensure();
    }
    engineServer = await EngineServer.start({
      engine,
      snapshots: engine,
      replication: engine,
      pullGrants: { allows: (name, node) => engine.allowsPull(name, node) },
      address: values["engine-listen"],
      transport,
      version: packageVersion(),
      logger,
    });
    csi = await CsiServer.start({
      socketPath,
      logger,
      identity: identityHandlers({
        pluginName,
        vendorVersion: packageVersion(),
        controller: false,
        ready: () => engine.isReady(),
        logger,
        observer: csiMetrics.observer,
      }),
      node: new NodeService({
        engine,
        volumes: nodeVolumes,
        maxVolumesPerNode: maxVolumes,
        pathRoots,
        logger,
        observer: csiMetrics.observer,
      }).handlers(),
    });
  } catch (err) {
    logger.error("cannot start serving", { err });
    await engine.close();
    return 1;
  }

  certificate?.startRenewal(() => {
    engineServer.reloadTls(transport);
    logger.info("serving the engine service with the renewed certificate");
  });
  const metrics = metricsAddress ? await serveMetrics({ ...metricsAddress, registry, logger }) : undefined;

  // Announced only once serving: the controller must not dial an endpoint that is not there yet.
  let announcer: NodeAnnouncer | undefined;
  if (values.announce !== undefined) {
    announcer = new NodeAnnouncer({
      api: await connectKube(),
      nodeId,
      endpoint: values.announce,
      capacity: () => engine.capacity(),
      intervalMs: announceMs,
      logger,
    });
    await announcer.start();
  }

  return untilSignal(logger, async () => {
    announcer?.stop();
    certificate?.stop();
    await Promise.all([csi.shutdown(graceMs), engineServer.shutdown(graceMs)]);
    await metrics?.close();
    // In-flight NBD requests finish and every export is flushed before the pool closes.
    await nbd.shutdown();
    await nodeVolumes.close();
    await engine.close();
    remote.close();
  });
}

export function logLevel(level: string): LogLevel {
  if (!["debug", "info", "warn", "error"].includes(level))
    throw new UsageError(`--log-level ${level}: use debug, info, warn or error`);
  return level as LogLevel;
}

/**
 * Waits for SIGINT/SIGTERM, then runs stop once; a second signal exits at once. Resolves with
 * the exit code.
 */
export function untilSignal(logger: Logger, stop: () => Promise<void>): Promise<number> {
  return new Promise<number>((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        logger.warn("second signal: exiting without waiting", { signal });
        process.exit(1);
      }
      stopping = true;
      logger.info("shutting down", { signal });
      void stop().then(
        () => {
          logger.info("stopped", { exitCode: 0 });
          resolve(0);
        },
        (err: unknown) => {
          logger.error("shutdown failed", { err });
          resolve(1);
        },
      );
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
  });
}

/**
 * The Node data path (as in local mode): NBD export -> kernel block device -> filesystem; when
 * there is no block path here (or --attach none), stage/publish answer UNIMPLEMENTED with why.
 */
