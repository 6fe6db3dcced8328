import { hostname } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import {
  ClusterEngine,
  FileNodeDiscovery,
  StaticNodeDiscovery,
  parseNodeList,
  type NodeDiscovery,
} from "../pkg/cluster/index.js";
import {
  CsiServer,
  DEFAULT_PLUGIN_NAME,
  controllerHandlers,
  identityHandlers,
  snapshotMetadataHandlers,
  socketPathOf,
  validatePluginName,
} from "../pkg/csi/index.js";
import { UsageError } from "./byte-size.js";
import type { CliContext } from "./cli-context.js";
import { CsiMetrics, DEFAULT_METRICS_ADDRESS, createMetricsRegistry } from "../pkg/metrics/index.js";
import { logLevel, untilSignal } from "./node-command.js";
import { NODE_CERT_DAYS, controllerTls } from "./engine-tls-setup.js";
import { metricsAddressOption, serveMetrics } from "./node-side.js";
import { packageVersion } from "./package-version.js";
import { createLogger } from "../pkg/log/index.js";
import {
  CsrSigner,
  KubeEventRecorder,
  KubernetesNodeDiscovery,
  LeaseElection,
  connectKube,
} from "../pkg/k8s/index.js";
import { RemoteEngine } from "../pkg/engine-service/index.js";

export const CONTROLLER_USAGE = `snapblock controller (--nodes LIST | --nodes-file FILE | --kube-discovery) [options]

The controller of cluster mode: Identity + Controller on the CSI socket (for the sidecars), every
volume operation sent to the engine service of the node that holds (or will hold) the volume.

  --endpoint EP           CSI socket (default unix:///csi/csi.sock)
  --nodes LIST            static node list: node-a=host:port,node-b=host:port
  --nodes-file FILE       the same, one per line (re-read every --refresh seconds)
  --kube-discovery        the nodes from the snapblock.dev/ annotations node plugins publish on
                          their Node objects (snapblock node --announce)
  --refresh SEC           how often node discovery is asked again (default 30)
  --kube-events           report failed placements and background copies as Events on the PVC (needs the provisioner's
                          --extra-create-metadata)
  --leader-elect          with several replicas: serve only while holding the Lease
  --leader-elect-namespace NS   namespace of the Lease (default: $POD_NAMESPACE or kube-system)
  --leader-elect-name NAME      name of the Lease (default snapblock-controller)
  --identity ID           this replica in the Lease (default: $POD_NAME or the host name)
  --tls-ca FILE           CA of the engine service (PEM)        } required unless
  --tls-cert FILE         the controller's certificate (PEM)    } --insecure-loopback
  --tls-key FILE          the controller's private key (PEM)    }
  --tls-ca-key FILE       instead of --tls-cert/--tls-key: the engine CA's key; the controller
                          issues its own client certificate from it
  --sign-node-certificates
                          with --tls-ca-key: approve and sign the node plugins' certificate
                          requests (Kubernetes CSRs, signer snapblock.dev/engine) for their own node
  --node-service-account NS/NAME
                          the node plugins' service account (default: $POD_NAMESPACE/snapblock-node)
  --node-certificate-days N  longest node certificate issued (default ${NODE_CERT_DAYS})
  --node-lost-after SEC   a node unreachable this long is gone: snapshots it held are copied again
                          from the survivors (default 600)
  --replica-check-every SEC  how often snapshot replicas are checked and repaired (default 30)
  --ca-configmap NAME     publish the engine CA certificate (key ca.crt) in this ConfigMap of the
                          controller's namespace, for the node plugins to mount
  --insecure-loopback     plaintext to nodes on loopback addresses only (tests, one machine)
  --call-timeout SEC      deadline of one engine call (default 60)
  --plugin-name NAME      CSI driver name (default ${DEFAULT_PLUGIN_NAME})
  --metrics-address A     serve Prometheus /metrics on HOST:PORT, or none (default ${DEFAULT_METRICS_ADDRESS})
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
      "kube-discovery": { type: "boolean", default: false },
      "kube-events": { type: "boolean", default: false },
      "leader-elect": { type: "boolean", default: false },
      "leader-elect-namespace": { type: "string" },
      "leader-elect-name": { type: "string", default: "snapblock-controller" },
      identity: { type: "string" },
      refresh: { type: "string", default: "30" },
      "tls-ca": { type: "string" },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
      "tls-ca-key": { type: "string" },
      "sign-node-certificates": { type: "boolean", default: false },
      "node-service-account": { type: "string" },
      "node-certificate-days": { type: "string", default: String(NODE_CERT_DAYS) },
      "ca-configmap": { type: "string" },
      "node-lost-after": { type: "string", default: "600" },
      "replica-check-every": { type: "string", default: "30" },
      "insecure-loopback": { type: "boolean", default: false },
      "call-timeout": { type: "string", default: "60" },
      "plugin-name": { type: "string", default: DEFAULT_PLUGIN_NAME },
      "log-level": { type: "string", default: "info" },
      "shutdown-grace": { type: "string", default: "30" },
      "metrics-address": { type: "string", default: DEFAULT_METRICS_ADDRESS },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    ctx.stdout(CONTROLLER_USAGE);
    return 0;
  }
  const socketPath = socketPathOf(values.endpoint, ctx.cwd);
  const pluginName = validatePluginName(values["plugin-name"]);
  const { transport, ca } = await controllerTls(values, ctx.cwd);
  const nodeCertDays = Number(values["node-certificate-days"]);
  if (!(nodeCertDays > 0))
    throw new UsageError(`--node-certificate-days ${values["node-certificate-days"]}: days > 0`);
  if ((values["sign-node-certificates"] || values["ca-configmap"]) && !ca) {
    throw new UsageError(
      "--sign-node-certificates and --ca-configmap need the CA: --tls-ca with --tls-ca-key",
    );
  }
  const namespace = values["leader-elect-namespace"] ?? ctx.env.POD_NAMESPACE ?? "kube-system";
  const lostAfterMs = Number(values["node-lost-after"]) * 1000;
  const replicaCheckMs = Number(values["replica-check-every"]) * 1000;
  if (!(lostAfterMs > 0)) throw new UsageError(`--node-lost-after ${values["node-lost-after"]}: seconds > 0`);
  if (!(replicaCheckMs > 0))
    throw new UsageError(`--replica-check-every ${values["replica-check-every"]}: seconds > 0`);
  const level = logLevel(values["log-level"]);
  const refreshMs = Number(values.refresh) * 1000;
  const callTimeoutMs = Number(values["call-timeout"]) * 1000;
  const graceMs = Number(values["shutdown-grace"]) * 1000;
  if (!(refreshMs > 0)) throw new UsageError(`--refresh ${values.refresh}: seconds > 0`);
  if (!(callTimeoutMs > 0)) throw new UsageError(`--call-timeout ${values["call-timeout"]}: seconds > 0`);
  if (!(graceMs >= 0)) throw new UsageError(`--shutdown-grace ${values["shutdown-grace"]}: seconds >= 0`);
  const metricsAddress = metricsAddressOption(values["metrics-address"]);
  const sources = [values.nodes !== undefined, values["nodes-file"] !== undefined, values["kube-discovery"]];
  if (sources.filter(Boolean).length !== 1) {
    throw new UsageError("give the nodes with exactly one of --nodes, --nodes-file or --kube-discovery");
  }
  const logger = createLogger({ level, write: ctx.stderr, base: { component: "snapblock-controller" } });
  const kube =
    values["kube-discovery"] ||
    values["leader-elect"] ||
    values["kube-events"] ||
    values["sign-node-certificates"] ||
    values["ca-configmap"]
      ? await connectKube()
      : undefined;
  const events =
    values["kube-events"] && kube
      ? new KubeEventRecorder({ api: kube, source: "snapblock-controller", logger })
      : undefined;
  let discovery: NodeDiscovery;
  if (values.nodes !== undefined) discovery = new StaticNodeDiscovery(parseNodeList(values.nodes, "--nodes"));
  else if (values["nodes-file"] !== undefined)
    discovery = new FileNodeDiscovery(path.resolve(ctx.cwd, values["nodes-file"]));
  else discovery = new KubernetesNodeDiscovery({ api: kube! });

  // With several replicas only the Lease holder serves; losing the Lease exits the process (the
  // client-go convention) so that Kubernetes restarts it as a clean follower.
  let election: LeaseElection | undefined;
  let shuttingDown = false;
  if (values["leader-elect"]) {
    const identity = values.identity ?? ctx.env.POD_NAME ?? hostname();
    let lost: () => void = () => undefined;
    const lostLease = new Promise<void>((resolve) => (lost = resolve));
    election = new LeaseElection({
      api: kube!,
      namespace,
      name: values["leader-elect-name"],
      identity,
      logger,
      onStoppedLeading: () => lost(),
    });
    void lostLease.then(() => {
      if (shuttingDown) return;
      logger.error("lost the leader Lease: exiting so that a clean follower restarts", { identity });
      process.exit(1);
    });
    while (!(await election.tryAcquireOrRenew())) {
      await new Promise((r) => setTimeout(r, 2000));
    }
    await election.start();
  }

  // The node plugins mount the CA certificate from this ConfigMap; their certificates come from
  // the signer below (only the leader runs it: the Lease is held by now).
  if (values["ca-configmap"] && ca && kube) {
    await kube.putConfigMap(namespace, values["ca-configmap"], { "ca.crt": ca.certPem });
  }
  let signing: NodeJS.Timeout | undefined;
  if (values["sign-node-certificates"] && ca && kube) {
    const signer = new CsrSigner({
      api: kube,
      ca,
      nodeServiceAccount: serviceAccountName(values["node-service-account"] ?? `${namespace}/snapblock-node`),
      maxDays: nodeCertDays,
      logger,
    });
    const pass = (): void =>
      void signer
        .reconcile()
        .catch((err: unknown) => logger.error("node certificate signer pass failed", { err }));
    pass();
    signing = setInterval(pass, 2000);
    signing.unref();
  }

  const cluster = new ClusterEngine({
    discovery,
    connect: (endpoint) => new RemoteEngine({ ...endpoint, transport, callTimeoutMs }),
    logger,
    lostAfterMs,
    ...(events ? { events } : {}),
  });
  // The first discovery is part of starting: a bad node list or a plaintext setup that is not on
  // loopback fails here, loudly, instead of leaving a controller that knows no nodes.
  await cluster.refresh();
  const registry = createMetricsRegistry();
  const csiMetrics = new CsiMetrics({ registry });
  const server = await CsiServer.start({
    socketPath,
    logger,
    identity: identityHandlers({
      pluginName,
      vendorVersion: packageVersion(),
      controller: true,
      snapshotMetadata: true,
      ready: () => cluster.isReady(),
      logger,
      observer: csiMetrics.observer,
    }),
    controller: controllerHandlers({ engine: cluster, logger, observer: csiMetrics.observer }),
    snapshotMetadata: snapshotMetadataHandlers({ engine: cluster, logger, observer: csiMetrics.observer }),
  });
  const metrics = metricsAddress ? await serveMetrics({ ...metricsAddress, registry, logger }) : undefined;

  // Later discovery failures keep the last known nodes: a flaky API server must not drop them all.
  const refresh = async (): Promise<void> => {
    try {
      await cluster.refresh();
    } catch (err) {
      logger.error("node discovery failed; keeping the nodes known so far", { err });
    }
  };
  logger.info("controller ready", {
    socket: socketPath,
    nodes: cluster.nodeEngines().map((e) => e.nodeId),
    tls: transport.tls !== undefined,
  });
  const timer = setInterval(() => void refresh(), refreshMs);
  timer.unref();
  // The replica repair loop (only the leader gets here).
  let checking = false;
  const replicaCheck = setInterval(() => {
    if (checking) return;
    checking = true;
    cluster.replicator
      .reconcile()
      .then((report) => {
        const changed =
          report.deleted.length + report.added.length + report.dropped.length + report.redirected.length;
        if (changed > 0) logger.info("snapshot replicas reconciled", report);
      })
      .catch((err: unknown) => logger.error("snapshot replica check failed", { err }))
      .finally(() => {
        checking = false;
      });
  }, replicaCheckMs);
  replicaCheck.unref();

  return untilSignal(logger, async () => {
    shuttingDown = true;
    clearInterval(timer);
    clearInterval(signing);
    clearInterval(replicaCheck);
    await server.shutdown(graceMs);
    await metrics?.close();
    cluster.close();
    await events?.flush();
    await election?.stop();
  });
}

/** "NS/NAME" as the user name the API server gives that service account's tokens. */
function serviceAccountName(text: string): string {
  const m = /^([a-z0-9][a-z0-9.-]*)\/([a-z0-9][a-z0-9.-]*)$/.exec(text);
  if (!m) throw new UsageError(`--node-service-account ${text}: use NAMESPACE/NAME`);
  return `system:serviceaccount:${m[1]}:${m[2]}`;
}
