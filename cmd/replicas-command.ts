import { ClusterEngine } from "../pkg/cluster/index.js";
import { RemoteEngine } from "../pkg/engine-service/index.js";
import { connectKube } from "../pkg/k8s/index.js";
import { silentLogger } from "../pkg/log/index.js";
import type { CliContext } from "./cli-context.js";
import { TLS_FLAGS, secondsFlag } from "./common-flags.js";
import { controllerTls } from "./engine-tls-setup.js";
import { NODE_SOURCE_FLAGS, nodeDiscovery, nodeSourceConfig } from "./node-source.js";
import { printJson, printTable, type Output } from "./table-output.js";
import { HELP_FLAG, defineVerb, runVerb } from "./verb-spec.js";

export const REPLICAS_VERB = defineVerb({
  command: "replicas",
  summary:
    "Where each snapshot of a cluster is kept and what is being copied between nodes, read from every node's engine service with the controller's credentials (run it where the controller runs, e.g. kubectl exec into the controller pod).",
  description:
    "Per snapshot: the replicas it wants and the nodes holding it (complete, or copying with progress); then the volumes still filling from another node. Give the nodes with exactly one of --nodes, --nodes-file or --kube-discovery, as for snapblock controller.",
  flags: {
    ...NODE_SOURCE_FLAGS,
    ...TLS_FLAGS,
    "tls-ca-key": {
      type: "string",
      value: "FILE",
      help: "instead of --tls-cert/--tls-key: the engine CA's key (a controller certificate is issued for this run)",
    },
    "call-timeout": { type: "string", value: "SEC", default: "10", help: "deadline of one engine call" },
    json: { type: "boolean", default: false, help: "machine-readable output" },
    help: HELP_FLAG,
  },
});

/** `snapblock replicas`. */
export function replicasCommand(ctx: CliContext): Promise<number> {
  return runVerb(ctx)(REPLICAS_VERB, async (values) => {
    const source = nodeSourceConfig(values, ctx.cwd);
    const callTimeoutMs = secondsFlag(values["call-timeout"], "--call-timeout");
    const { transport } = await controllerTls(values, ctx.cwd);
    const kube = source.kind === "kube" ? await connectKube() : undefined;
    const cluster = new ClusterEngine({
      discovery: nodeDiscovery(source, kube),
      connect: (endpoint) => new RemoteEngine({ ...endpoint, transport, callTimeoutMs }),
      logger: silentLogger,
    });
    return report(ctx, cluster, values.json);
  });
}

async function report(ctx: CliContext, cluster: ClusterEngine, json: boolean): Promise<number> {
  try {
    await cluster.refresh();
    const status = await cluster.replicator.status();
    const out: Output = { json, write: ctx.stdout };
    if (json) {
      printJson(out, status);
      return 0;
    }
    printTable(
      out,
      ["SNAPSHOT", "WANTED", "COMPLETE", "HOLDERS"],
      status.snapshots.map((s) => {
        const complete = s.replicas.filter((r) => r.complete).length;
        const holders = [
          ...(s.atOrigin ? [`${s.origin.split("/")[0]!} (own node)`] : []),
          ...s.replicas.map((r) =>
            r.complete
              ? r.nodeId
              : `${r.nodeId} (copying ${percent(r.totalChunks - r.pendingChunks, r.totalChunks)})`,
          ),
        ];
        return [s.origin, String(s.wanted), String(complete), holders.join(", ")];
      }),
    );
    if (status.pulls.length > 0) {
      ctx.stdout("\n");
      printTable(
        out,
        ["VOLUME", "FROM SNAPSHOT", "PROGRESS", "STATE"],
        status.pulls.map((p) => [
          `${p.nodeId}/${p.volume}`,
          p.origin,
          percent(p.totalChunks - p.pendingChunks, p.totalChunks),
          p.state === "stalled" ? `stalled: ${p.error ?? "no holder answers"}` : p.state,
        ]),
      );
    }
    if (status.unreachable.length > 0) {
      ctx.stderr(`snapblock: not shown, did not answer: ${status.unreachable.join(", ")}\n`);
      return 1;
    }
    return 0;
  } finally {
    cluster.close();
  }
}

function percent(done: number, total: number): string {
  return total === 0 ? "100%" : `${Math.floor((done / total) * 100)}%`;
}
