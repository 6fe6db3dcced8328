import {
  CsiServer,
  NodeService,
  controllerHandlers,
  identityHandlers,
  snapshotMetadataHandlers,
} from "../pkg/csi/index.js";
import { createLogger } from "../pkg/log/index.js";
import { UserExports } from "../pkg/node/index.js";
import { OperatorService } from "../pkg/operator/index.js";
import type { CliContext } from "./cli-context.js";
import { LOCAL_VERB, localConfig, type LocalConfig } from "./local-config.js";
import { buildNodeSide, openPool, serveMetrics } from "./node-side.js";
import { packageVersion } from "./package-version.js";
import { untilSignal } from "./until-signal.js";
import { runVerb } from "./verb-spec.js";
import { spaceService, spaceServiceHandlers } from "../pkg/engine-service/index.js";

export { LOCAL_VERB };

/** `snapblock local`: the flags (local-config.ts), then the wiring. */
export function localCommand(ctx: CliContext): Promise<number> {
  return runVerb(ctx)(LOCAL_VERB, (values) => runLocal(ctx, localConfig(values, ctx.cwd)));
}

async function runLocal(ctx: CliContext, config: LocalConfig): Promise<number> {
  const logger = createLogger({
    level: config.logLevel,
    write: ctx.stderr,
    base: { component: "snapblock-local", node: config.nodeId },
  });
  const side = await buildNodeSide({
    mode: "local",
    pool: config,
    // `snapblock volume attach` stages under the data directory, whatever --path-root says.
    ...(config.pathRoots.length > 0 ? { pathRoots: [...config.pathRoots, config.attachDir] } : {}),
    logLevel: config.logLevel,
    logger,
    stderr: ctx.stderr,
  });
  const { engine, nbd, nodeVolumes, csiMetrics } = side;
  // NBD exports for people (`snapblock volume export`) take turns with the node path (claims).
  const userExports = new UserExports({
    devices: engine,
    nbd,
    socketDir: config.exportDir,
    claims: side.claims,
    logger,
  });
  const operator = new OperatorService({
    engine,
    attachDir: config.attachDir,
    logger,
    dataPath: {
      attachments: side.attachments,
      exports: () => userExports.list(),
      startExport: (o) => userExports.start(o),
      stopExport: (kind, name) => userExports.stop(kind, name),
    },
  });
  const observer = csiMetrics.observer;
  const server = await CsiServer.start({
    socketPath: config.socketPath,
    logger,
    identity: identityHandlers({
      pluginName: config.pluginName,
      vendorVersion: packageVersion(),
      controller: true,
      snapshotMetadata: true,
      ready: () => engine.isReady(),
      logger,
      observer,
    }),
    ...controllerHandlers({ engine, logger, observer }),
    snapshotMetadata: snapshotMetadataHandlers({ engine, logger, observer }),
    node: new NodeService({
      engine,
      volumes: nodeVolumes,
      maxVolumesPerNode: config.maxVolumes,
      // `snapblock volume attach` stages under the data directory, whatever --path-root says.
      pathRoots: config.pathRoots.length > 0 ? [...config.pathRoots, config.attachDir] : [],
      logger,
      observer,
    }).handlers(),
    extraServices: [
      { name: "Space", definition: spaceService(), implementation: spaceServiceHandlers(engine, logger) },
      { name: "Operator", definition: operator.definition(), implementation: operator.handlers() },
    ],
  });
  // After the CSI server: serveMetrics never fails, so nothing is left listening if CSI cannot start.
  const metrics = await serveMetrics({ address: config.metricsAddress, registry: side.registry, logger });
  const stopped = untilSignal(logger, async () => {
    await server.shutdown(config.graceMs);
    // In-flight NBD requests finish and every export is flushed before the pool closes.
    await nbd.shutdown();
    userExports.close();
    await nodeVolumes.close();
    await side.dataPlane.close();
    await engine.close();
    await metrics?.close();
  });
  // The socket answers Probe "not ready" until the pool is open (CSI spec, Probe).
  if (!(await openPool(side, config, logger))) {
    await server.shutdown(0);
    await metrics?.close();
    return 1;
  }
  return stopped;
}
