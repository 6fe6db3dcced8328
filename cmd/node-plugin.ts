import path from "node:path";
import { CsiServer, NodeService, identityHandlers } from "../pkg/csi/index.js";
import { DataPlaneClient } from "../pkg/dataplane/index.js";
import { createLogger } from "../pkg/log/index.js";
import { CsiMetrics, createMetricsRegistry } from "../pkg/metrics/index.js";
import { DataPlaneWatch, NbdNodeVolumes } from "../pkg/node/index.js";
import type { CliContext } from "./cli-context.js";
import type { NodeConfig } from "./node-config.js";
import { serveMetrics } from "./node-side.js";
import { packageVersion } from "./package-version.js";
import { untilSignal } from "./until-signal.js";

/**
 * `snapblock node --dataplane-socket PATH`: the CSI node plugin alone (docs/design.md, "Processes
 * of a node"): Identity + Node on the kubelet's socket, filesystems and mounts here, everything
 * else asked of the node's data plane. It holds no state that I/O depends on: killed at any moment
 * and started again, it reads what is attached and mounted and carries on.
 */
export async function runNodePlugin(
  ctx: CliContext,
  config: NodeConfig & { dataplaneSocket: string },
): Promise<number> {
  const logger = createLogger({
    level: config.logLevel,
    write: ctx.stderr,
    base: { component: "snapblock-node-plugin", node: config.nodeId },
  });
  const dataPlane = new DataPlaneClient({ socketPath: config.dataplaneSocket, logger });
  const watch = new DataPlaneWatch({ dataPlane, nodeId: config.nodeId, logger });
  const registry = createMetricsRegistry();
  const csiMetrics = new CsiMetrics({ registry });
  const volumes = new NbdNodeVolumes({
    dataPlane,
    publicationDir: path.join(config.dataDir, "published"),
    pathRoots: config.pathRoots,
    logger,
  });
  let csi: CsiServer;
  try {
    csi = await CsiServer.start({
      socketPath: config.socketPath,
      logger,
      identity: identityHandlers({
        pluginName: config.pluginName,
        vendorVersion: packageVersion(),
        controller: false,
        ready: () => watch.ready(),
        logger,
        observer: csiMetrics.observer,
      }),
      node: new NodeService({
        engine: {
          nodeId: config.nodeId,
          getVolume: (name) => dataPlane.getVolume(name),
          updateVolumeMeta: (name, patch) => dataPlane.updateVolumeMeta(name, patch),
        },
        volumes,
        maxVolumesPerNode: config.maxVolumes,
        pathRoots: config.pathRoots,
        logger,
        observer: csiMetrics.observer,
      }).handlers(),
    });
  } catch (err) {
    logger.error("cannot start serving", { err });
    dataPlane.close();
    return 1;
  }
  await watch.start();
  const metrics = await serveMetrics({ address: config.metricsAddress, registry, logger });
  return untilSignal(logger, async () => {
    watch.stop();
    await csi.shutdown(config.graceMs);
    await metrics?.close();
    dataPlane.close();
  });
}
