import path from "node:path";
import { parseArgs } from "node:util";
import {
  ClusterEngine,
  FileNodeDiscovery,
  RemoteEngine,
  StaticNodeDiscovery,
  parseNodeList,
  type NodeDiscovery,
} from "../pkg/cluster/index.js";
import {
  CsiServer,
  DEFAULT_PLUGIN_NAME,
  controllerHandlers,
  createCsiLogger,
  identityHandlers,
  socketPathOf,
  validatePluginName,
} from "../pkg/csi/index.js";
import { UsageError } from "./byte-size.js";
import type { CliContext } from "./cli-context.js";
import { logLevel, transportFlags, untilSignal } from "./node-command.js";
import { packageVersion } from "./package-version.js";

export const CONTROLLER_USAGE = `snapblock controller (--nodes LIST | --nodes-file FILE) [options]

The controller of cluster mode: Identity + Controller on the CSI socket (for the sidecars), every
volume operation sent to the engine service of the node that holds (or will hold) the volume.

  --endpoint EP           CSI socket (default unix:///csi/csi.sock)
  --nodes LIST            static node list: node-a=host:port,node-b=host:port
  --nodes-file FILE       the same, one per line (re-read every --refresh seconds)
  --refresh SEC           how often node discovery is asked again (default 30)
  --tls-ca FILE           CA of the engine service (PEM)        } required unless
  --tls-cert FILE         the controller's certificate (PEM)    } --insecure-loopback
  --tls-key FILE          the controller's private key (PEM)    }
  --tls-server-name NAME  name the node certificates carry, when not the address's host
  --insecure-loopback     plaintext to nodes on loopback addresses only (tests, one machine)
  --call-timeout SEC      deadline of one engine call (default 60)
  --plugin-name NAME      CSI driver name (default ${DEFAULT_PLUGIN_NAME})
  --log-level LEVEL       debug, info, warn or error (default info)
  --shutdown-grace SEC    how long calls in flight may finish on SIGINT/SIGTERM (default 30)
`;

export async function controllerCommand(ctx: CliContext): Promise<number> {
  const { values } = parseArgs({
    args: ctx.args,
    options: {
      endpoint: { type: "string", default: "unix:///csi/csi.sock" },
      nodes: { type: "string" },
      "nodes-file": { type: "string" },
      refresh: { type: "string", default: "30" },
      "tls-ca": { type: "string" },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
      "tls-server-name": { type: "string" },
      "insecure-loopback": { type: "boolean", default: false },
      "call-timeout": { type: "string", default: "60" },
      "plugin-name": { type: "string", default: DEFAULT_PLUGIN_NAME },
      "log-level": { type: "string", default: "info" },
      "shutdown-grace": { type: "string", default: "30" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    ctx.stdout(CONTROLLER_USAGE);
    return 0;
  }
  const socketPath = socketPathOf(values.endpoint, ctx.cwd);
  const pluginName = validatePluginName(values["plugin-name"]);
  const transport = transportFlags(values, ctx.cwd);
  if (values["tls-server-name"]) transport.serverName = values["tls-server-name"];
  const level = logLevel(values["log-level"]);
  const refreshMs = Number(values.refresh) * 1000;
  const callTimeoutMs = Number(values["call-timeout"]) * 1000;
  const graceMs = Number(values["shutdown-grace"]) * 1000;
  if (!(refreshMs > 0)) throw new UsageError(`--refresh ${values.refresh}: seconds > 0`);
  if (!(callTimeoutMs > 0)) throw new UsageError(`--call-timeout ${values["call-timeout"]}: seconds > 0`);
  if (!(graceMs >= 0)) throw new UsageError(`--shutdown-grace ${values["shutdown-grace"]}: seconds >= 0`);
  let discovery: NodeDiscovery;
  if (values.nodes !== undefined && values["nodes-file"] === undefined) {
    discovery = new StaticNodeDiscovery(parseNodeList(values.nodes, "--nodes"));
  } else if (values["nodes-file"] !== undefined && values.nodes === undefined) {
    discovery = new FileNodeDiscovery(path.resolve(ctx.cwd, values["nodes-file"]));
  } else {
    throw new UsageError("give the nodes with exactly one of --nodes or --nodes-file");
  }

  const logger = createCsiLogger({ level, write: ctx.stderr, base: { component: "snapblock-controller" } });
  const cluster = new ClusterEngine({
    discovery,
    connect: (endpoint) => new RemoteEngine({ ...endpoint, transport, callTimeoutMs }),
    logger,
  });
  const server = await CsiServer.start({
    socketPath,
    logger,
    identity: identityHandlers({
      pluginName,
      vendorVersion: packageVersion(),
      controller: true,
      ready: () => cluster.isReady(),
      logger,
    }),
    controller: controllerHandlers({ engine: cluster, logger }),
  });

  // Discovery failures keep the last known nodes: a flaky API server must not drop every node.
  const refresh = async (): Promise<void> => {
    try {
      await cluster.refresh();
    } catch (err) {
      logger.error("node discovery failed; keeping the nodes known so far", { err });
    }
  };
  await refresh();
  logger.info("controller ready", {
    socket: socketPath,
    nodes: cluster.nodeEngines().map((e) => e.nodeId),
    tls: transport.tls !== undefined,
  });
  const timer = setInterval(() => void refresh(), refreshMs);
  timer.unref();

  return untilSignal(logger, async () => {
    clearInterval(timer);
    await server.shutdown(graceMs);
    cluster.close();
  });
}
