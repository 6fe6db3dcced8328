import path from "node:path";
import {
  FileNodeDiscovery,
  StaticNodeDiscovery,
  parseNodeList,
  type NodeDiscovery,
  type NodeEndpoint,
} from "../pkg/cluster/index.js";
import { KubernetesNodeDiscovery, type KubeApi } from "../pkg/k8s/index.js";
import { usage } from "./common-flags.js";
import { UsageError } from "./usage-error.js";
import type { FlagSpec } from "./verb-spec.js";

/** How the commands that reach every node (controller, replicas) learn the nodes, declared once. */
export const NODE_SOURCE_FLAGS = {
  nodes: { type: "string", value: "LIST", help: "static node list: node-a=host:port,node-b=host:port" },
  "nodes-file": {
    type: "string",
    value: "FILE",
    help: "the same, one per line (the controller reads it again every --refresh seconds)",
  },
  "kube-discovery": {
    type: "boolean",
    default: false,
    help: "the nodes from the snapblock.dev/ annotations node plugins publish on their Node objects (snapblock node --announce)",
  },
} as const satisfies Record<string, FlagSpec>;

export type NodeSource =
  { kind: "static"; nodes: NodeEndpoint[] } | { kind: "file"; file: string } | { kind: "kube" };

/** The node-source flags, checked (pure: a usage error unless exactly one is given). */
export function nodeSourceConfig(
  values: { nodes?: string | undefined; "nodes-file"?: string | undefined; "kube-discovery": boolean },
  cwd: string,
): NodeSource {
  const sources = [values.nodes !== undefined, values["nodes-file"] !== undefined, values["kube-discovery"]];
  if (sources.filter(Boolean).length !== 1)
    throw new UsageError("give the nodes with exactly one of --nodes, --nodes-file or --kube-discovery");
  if (values.nodes !== undefined)
    return { kind: "static", nodes: usage(() => parseNodeList(values.nodes!, "--nodes"), "--nodes") };
  if (values["nodes-file"] !== undefined)
    return { kind: "file", file: path.resolve(cwd, values["nodes-file"]) };
  return { kind: "kube" };
}

export function nodeDiscovery(source: NodeSource, kube: KubeApi | undefined): NodeDiscovery {
  if (source.kind === "static") return new StaticNodeDiscovery(source.nodes);
  if (source.kind === "file") return new FileNodeDiscovery(source.file);
  if (!kube) throw new UsageError("--kube-discovery needs the Kubernetes API");
  return new KubernetesNodeDiscovery({ api: kube });
}
