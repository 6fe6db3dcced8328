import path from "node:path";
import {
  FileNodeDiscovery,
  StaticNodeDiscovery,
  parseNodeList,
  type NodeDiscovery,
} from "../pkg/cluster/index.js";
import { KubernetesNodeDiscovery, type KubeApi } from "../pkg/k8s/index.js";
import { UsageError } from "./byte-size.js";

/** The node-source flags of the commands that reach every node (controller, replicas). */
export interface NodeSourceFlags {
  nodes?: string;
  "nodes-file"?: string;
  "kube-discovery"?: boolean;
}

export function checkNodeSource(values: NodeSourceFlags): void {
  const sources = [values.nodes !== undefined, values["nodes-file"] !== undefined, values["kube-discovery"]];
  if (sources.filter(Boolean).length !== 1) {
    throw new UsageError("give the nodes with exactly one of --nodes, --nodes-file or --kube-discovery");
  }
}

export function nodeDiscovery(
  values: NodeSourceFlags,
  cwd: string,
  kube: KubeApi | undefined,
): NodeDiscovery {
  if (values.nodes !== undefined) return new StaticNodeDiscovery(parseNodeList(values.nodes, "--nodes"));
  if (values["nodes-file"] !== undefined)
    return new FileNodeDiscovery(path.resolve(cwd, values["nodes-file"]));
  if (!kube) throw new UsageError("--kube-discovery needs the Kubernetes API");
  return new KubernetesNodeDiscovery({ api: kube });
}
