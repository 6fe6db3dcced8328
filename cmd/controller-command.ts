import { hostname } from "node:os";
import { ClusterEngine, PoolUsageEvents } from "../pkg/cluster/index.js";
import {
  CsiServer,
  controllerHandlers,
  identityHandlers,
  snapshotMetadataHandlers,
} from "../pkg/csi/index.js";
import { RemoteEngine, spaceService, spaceServiceHandlers } from "../pkg/engine-service/index.js";
import {
  CsrSigner,
  ExportedPointPins,
  KubeEventRecorder,
  LeaseElection,
  SnapshotSchedules,
  connectKube,
} from "../pkg/k8s/index.js";
import { createLogger, type Logger } from "../pkg/log/index.js";
import { controllerOperatorService, pointPinner } from "../pkg/operator/index.js";
import { CsiMetrics, ReplicationMetrics, createMetricsRegistry } from "../pkg/metrics/index.js";
import type { CliContext } from "./cli-context.js";
import { CONTROLLER_VERB, controllerConfig, type ControllerConfig } from "./controller-config.js";
import { controllerTls } from "./engine-tls-setup.js";
import { nodeDiscovery } from "./node-source.js";
import { serveMetrics } from "./node-side.js";
import { packageVersion } from "./package-version.js";
import { untilSignal } from "./until-signal.js";
import { runVerb } from "./verb-spec.js";

export { CONTROLLER_VERB };

/** `snapblock controller`: the flags (controller-config.ts), then the wiring. */
export function controllerCommand(ctx: CliContext): Promise<number> {
  return runVerb(ctx)(CONTROLLER_VERB, (values) =>
    runController(ctx, controllerConfig(values, { cwd: ctx.cwd, env: ctx.env, hostname: hostname() })),
  );
}

async function runController(ctx: CliContext, config: ControllerConfig): Promise<number> {
  const logger = createLogger({
    level: config.logLevel,
    write: ctx.stderr,
    base: { component: "snapblock-controller" },
  });
  const { transport, ca } = await controllerTls(config.tls, ctx.cwd);
  const kube =
    config.nodes.kind === "kube" ||
    config.leaderElection ||
    config.kubeEvents ||
    config.snapshotSchedules ||
    config.pinExportedPoints ||
    config.signNodeCertificates ||
    config.caConfigMap
      ? await connectKube()
      : undefined;
  const events =
    config.kubeEvents && kube
      ? new KubeEventRecorder({ api: kube, source: "snapblock-controller", logger })
      : undefined;
  const discovery = nodeDiscovery(config.nodes, kube);

  let shuttingDown = false;
  const election = config.leaderElection
    ? await leadOrWait(
        { ...config.leaderElection, namespace: config.namespace },
        kube!,
        logger,
        () => shuttingDown,
      )
    : undefined;

  // The node plugins mount the CA certificate from this ConfigMap; their certificates come from
  // the signer below (only the leader runs it: the Lease is held by now).
  if (config.caConfigMap && ca && kube) {
    await kube.putConfigMap(config.namespace, config.caConfigMap, { "ca.crt": ca.certPem });
  }
  let signing: NodeJS.Timeout | undefined;
  if (config.signNodeCertificates && ca && kube) {
    const signer = new CsrSigner({
      api: kube,
      ca,
      nodeServiceAccount: config.signNodeCertificates.serviceAccount,
      maxDays: config.signNodeCertificates.maxDays,
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

  const registry = createMetricsRegistry();
  const replicationMetrics = new ReplicationMetrics({ registry });
  const cluster = new ClusterEngine({
    discovery,
    connect: (endpoint) => new RemoteEngine({ ...endpoint, transport, callTimeoutMs: config.callTimeoutMs }),
    logger,
    lostAfterMs: config.lostAfterMs,
    replicationObserver: replicationMetrics.observer,
    ...(events ? { events } : {}),
  });
  // The first discovery is part of starting: a bad node list or a plaintext setup that is not on
  // loopback fails here, loudly, instead of leaving a controller that knows no nodes.
  await cluster.refresh();
  const csiMetrics = new CsiMetrics({ registry });
  const server = await CsiServer.start({
    socketPath: config.socketPath,
    logger,
    identity: identityHandlers({
      pluginName: config.pluginName,
      vendorVersion: packageVersion(),
      controller: true,
      snapshotMetadata: true,
      ready: () => cluster.isReady(),
      logger,
      observer: csiMetrics.observer,
    }),
    ...controllerHandlers({ engine: cluster, logger, observer: csiMetrics.observer }),
    snapshotMetadata: snapshotMetadataHandlers({ engine: cluster, logger, observer: csiMetrics.observer }),
    extraServices: [
      { name: "Space", definition: spaceService(), implementation: spaceServiceHandlers(cluster, logger) },
      // Pins of exported recovery points (`snapblock volume points --kubernetes`), made on the
      // point's node through its engine service.
      {
        name: "Operator",
        ...controllerOperatorService({ engineFor: (id) => cluster.engineFor(id), logger }),
      },
    ],
  });
  // A node pool crossing 80/90/100 % use becomes Events on the PVCs it holds.
  const poolUsage = events ? new PoolUsageEvents({ engine: cluster, events, logger }) : undefined;
  poolUsage?.start();
  const metrics = await serveMetrics({ address: config.metricsAddress, registry, logger });

  // Later discovery failures keep the last known nodes: a flaky API server must not drop them all.
  const refresh = async (): Promise<void> => {
    try {
      await cluster.refresh();
    } catch (err) {
      logger.error("node discovery failed; keeping the nodes known so far", { err });
    }
  };
  logger.info("controller ready", {
    socket: config.socketPath,
    nodes: cluster.nodeEngines().map((e) => e.nodeId),
    tls: transport.tls !== undefined,
  });
  const timer = setInterval(() => void refresh(), config.refreshMs);
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
  }, config.replicaCheckMs);
  replicaCheck.unref();
  // Only the leader gets here (with --leader-elect), so one replica takes the scheduled snapshots
  // and pins the points of VolumeSnapshotContents. Their Events go out with or without
  // --kube-events (which is about the PVCs).
  const reconcilerEvents = kube
    ? (events ?? new KubeEventRecorder({ api: kube, source: "snapblock-controller", logger }))
    : undefined;
  const schedules =
    config.snapshotSchedules && kube && reconcilerEvents
      ? new SnapshotSchedules({
          api: kube,
          logger,
          events: reconcilerEvents,
          pollMs: config.snapshotSchedules.pollMs,
        })
      : undefined;
  schedules?.start();
  // A VolumeSnapshotContent naming a point, however it was written, pins that point on its node,
  // as SetPointPinned does (docs/protection.md, "Exported points").
  const exportedPoints =
    config.pinExportedPoints && kube && reconcilerEvents
      ? new ExportedPointPins({
          api: kube,
          driver: config.pluginName,
          points: pointPinner({ engineFor: (id) => cluster.engineFor(id), logger }),
          events: reconcilerEvents,
          logger,
          pollMs: config.pinExportedPoints.pollMs,
        })
      : undefined;
  exportedPoints?.start();

  return untilSignal(logger, async () => {
    shuttingDown = true;
    clearInterval(timer);
    clearInterval(signing);
    clearInterval(replicaCheck);
    schedules?.stop();
    exportedPoints?.stop();
    poolUsage?.stop();
    await server.shutdown(config.graceMs);
    await metrics?.close();
    cluster.close();
    await reconcilerEvents?.flush();
    await election?.stop();
  });
}

/**
 * With several replicas only the Lease holder serves: waits until this replica holds the Lease.
 * Losing it later exits the process (the client-go convention) so that Kubernetes restarts it as
 * a clean follower.
 */
async function leadOrWait(
  o: NonNullable<ControllerConfig["leaderElection"]> & { namespace: string },
  kube: Awaited<ReturnType<typeof connectKube>>,
  logger: Logger,
  shuttingDown: () => boolean,
): Promise<LeaseElection> {
  let lost: () => void = () => undefined;
  const lostLease = new Promise<void>((resolve) => (lost = resolve));
  const election = new LeaseElection({
    api: kube,
    namespace: o.namespace,
    name: o.name,
    identity: o.identity,
    logger,
    onStoppedLeading: () => lost(),
  });
  void lostLease.then(() => {
    if (shuttingDown()) return;
    logger.error("lost the leader Lease: exiting so that a clean follower restarts", {
      identity: o.identity,
    });
    process.exit(1);
  });
  while (!(await election.tryAcquireOrRenew())) {
    await new Promise((r) => setTimeout(r, 2000));
  }
  await election.start();
  return election;
}
