import { parseArgs } from "node:util";
import { ClusterEngine } from "../pkg/cluster/index.js";
import { RemoteEngine } from "../pkg/engine-service/index.js";
import { connectKube } from "../pkg/k8s/index.js";
import { silentLogger } from "../pkg/log/index.js";
import type { CliContext } from "./cli-context.js";
import { controllerTls } from "./engine-tls-setup.js";
import { checkNodeSource, nodeDiscovery } from "./node-source.js";
import { printJson, printTable, type Output } from "./table-output.js";

export const REPLICAS_USAGE = `snapblock replicas (--nodes LIST | --nodes-file FILE | --kube-discovery) [options]

Where each snapshot of a cluster is kept and what is being copied between nodes, read from every
node's engine service with the controller's credentials (run it where the controller runs, e.g.
kubectl exec into the controller pod): per snapshot the replicas it wants and the nodes holding
it (complete, or copying with progress), then the volumes still filling from another node.

  --nodes LIST / --nodes-file FILE / --kube-discovery   the nodes, as for snapblock controller
  --tls-ca FILE           the engine CA's certificate
  --tls-cert FILE, --tls-key FILE   the controller's certificate and key, or:
  --tls-ca-key FILE       the engine CA's key (a certificate is issued for this run)
  --insecure-loopback     plaintext to nodes on loopback addresses only
  --call-timeout SEC      deadline of one engine call (default 10)
  --json                  JSON instead of tables
`;

export async function replicasCommand(ctx: CliContext): Promise<number> {
  const { values } = parseArgs({
    args: ctx.args,
    options: {
      nodes: { type: "string" },
      "nodes-file": { type: "string" },
      "kube-discovery": { type: "boolean", default: false },
      "tls-ca": { type: "string" },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
      "tls-ca-key": { type: "string" },
      "insecure-loopback": { type: "boolean", default: false },
      "call-timeout": { type: "string", default: "10" },
      json: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    ctx.stdout(REPLICAS_USAGE);
    return 0;
  }
  checkNodeSource(values);
  const { transport } = await controllerTls(values, ctx.cwd);
  const callTimeoutMs = Number(values["call-timeout"]) * 1000;
  const kube = values["kube-discovery"] ? await connectKube() : undefined;
  const cluster = new ClusterEngine({
    discovery: nodeDiscovery(values, ctx.cwd, kube),
    connect: (endpoint) => new RemoteEngine({ ...endpoint, transport, callTimeoutMs }),
    logger: silentLogger,
  });
  try {
    await cluster.refresh();
    const status = await cluster.replicator.status();
    const out: Output = { json: values.json, write: ctx.stdout };
    if (values.json) {
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
