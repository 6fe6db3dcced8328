import { CsiServer, NodeService, identityHandlers } from "../pkg/csi/index.js";
import { DataPlaneServer } from "../pkg/dataplane/index.js";
import { EngineServer, HolderContent } from "../pkg/engine-service/index.js";
import { NodeAnnouncer, connectKube, type NodeCertificate } from "../pkg/k8s/index.js";
import { createLogger } from "../pkg/log/index.js";
import type { CliContext } from "./cli-context.js";
import { nodeTls } from "./engine-tls-setup.js";
import { NODE_VERB, nodeConfig, type NodeConfig } from "./node-config.js";
import { buildNodeSide, openPool, serveMetrics } from "./node-side.js";
import { packageVersion } from "./package-version.js";
import { untilSignal } from "./until-signal.js";
import { runVerb } from "./verb-spec.js";

export { NODE_VERB };

/**
 * `snapblock node`: the flags (node-config.ts), then the wiring: the CSI node plugin over a data
 * plane process (--dataplane-socket, node-plugin.ts), or both in this process.
 */
export function nodeCommand(ctx: CliContext): Promise<number> {
  return runVerb(ctx)(NODE_VERB, async (values) => {
    const config = nodeConfig(values, ctx.cwd);
    if (config.dataplaneSocket !== undefined) {
      const { runNodePlugin } = await import("./node-plugin.js");
      return runNodePlugin(ctx, { ...config, dataplaneSocket: config.dataplaneSocket });
    }
    return runNode(ctx, config, { serve: "csi" });
  });
}

/**
 * The pool's side of a node: pool, NBD, engine service, announcement; and then either the CSI
 * socket (`snapblock node` alone: the node plugin in this process) or the data plane service on
 * its unix socket (`snapblock dataplane`, for a node plugin in another process).
 */
export async function runNode(
  ctx: CliContext,
  config: NodeConfig,
  o: { serve: "csi" } | { serve: "dataplane"; socketPath: string },
): Promise<number> {
  const logger = createLogger({
    level: config.logLevel,
    write: ctx.stderr,
    base: { component: o.serve === "csi" ? "snapblock-node" : "snapblock-dataplane", node: config.nodeId },
  });
  const { transport, bootstrap } = nodeTls(config.tls, {
    cwd: ctx.cwd,
    nodeId: config.nodeId,
    dataDir: config.dataDir,
    logger,
  });
  // Snapshots on other nodes are read with this node's own certificate (holders check it).
  const remote = new HolderContent({ transport, logger });
  const side = await buildNodeSide({
    mode: "node",
    pool: config,
    logLevel: config.logLevel,
    logger,
    stderr: ctx.stderr,
    engine: { remote, pullBytesPerSecond: config.pullBytesPerSecond },
  });
  const { engine, nbd, nodeVolumes, csiMetrics } = side;

  // The pool opens before anything listens: the engine service must never answer CLOSED to the
  // controller for long, and the CSI socket's Probe says ready only once the pool is open.
  if (!(await openPool(side, config, logger))) return 1;
  let engineServer: EngineServer;
  let socketServer: CsiServer | DataPlaneServer;
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
      pointPins: engine,
      pullGrants: { allows: (name, node) => engine.allowsPull(name, node) },
      address: config.engineListen,
      transport,
      version: packageVersion(),
      logger,
    });
    socketServer =
      o.serve === "dataplane"
        ? await DataPlaneServer.start({ dataPlane: side.dataPlane, socketPath: o.socketPath, logger })
        : await CsiServer.start({
            socketPath: config.socketPath,
            logger,
            identity: identityHandlers({
              pluginName: config.pluginName,
              vendorVersion: packageVersion(),
              controller: false,
              ready: () => engine.isReady(),
              logger,
              observer: csiMetrics.observer,
            }),
            node: new NodeService({
              engine,
              volumes: nodeVolumes,
              maxVolumesPerNode: config.maxVolumes,
              pathRoots: config.pathRoots,
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
  const metrics = await serveMetrics({ address: config.metricsAddress, registry: side.registry, logger });

  // Announced only once serving: the controller must not dial an endpoint that is not there yet.
  let announcer: NodeAnnouncer | undefined;
  if (config.announce !== undefined) {
    announcer = new NodeAnnouncer({
      api: await connectKube(),
      nodeId: config.nodeId,
      endpoint: config.announce,
      capacity: () => engine.capacity(),
      intervalMs: config.announceMs,
      logger,
    });
    await announcer.start();
  }

  return untilSignal(logger, async () => {
    announcer?.stop();
    certificate?.stop();
    await Promise.all([socketServer.shutdown(config.graceMs), engineServer.shutdown(config.graceMs)]);
    await metrics?.close();
    // In-flight NBD requests finish and every export is flushed before the pool closes.
    await nbd.shutdown();
    await nodeVolumes.close();
    await side.dataPlane.close();
    await engine.close();
    remote.close();
  });
}
