import type { Topology } from "./generated/csi/v1/Topology.js";
import type { TopologyRequirement__Output } from "./generated/csi/v1/TopologyRequirement.js";

/**
 * Topology of snapblock volumes: a volume is reachable only from the node whose pool holds it
 * (VOLUME_ACCESSIBILITY_CONSTRAINTS). The segment key follows the CSI spec's Topology rules (a
 * DNS-style prefix, then a name).
 */
export const TOPOLOGY_KEY = "topology.snapblock.dev/node";

export function nodeTopology(nodeId: string): Topology {
  return { segments: { [TOPOLOGY_KEY]: nodeId } };
}

/**
 * accessibility_requirements as node ids. A requisite topology that does not name a node (no
 * topology.snapblock.dev/node segment) admits every node, so the whole list restricts nothing.
 */
export function requirementNodes(req: TopologyRequirement__Output | null | undefined): {
  requisite?: string[];
  preferred: string[];
} {
  const nodeOf = (t: { segments: Record<string, string> }) => t.segments[TOPOLOGY_KEY];
  const preferred = (req?.preferred ?? []).flatMap((t) => nodeOf(t) ?? []);
  const requisite = req?.requisite ?? [];
  if (requisite.length === 0 || requisite.some((t) => nodeOf(t) === undefined)) return { preferred };
  return { requisite: requisite.map((t) => nodeOf(t) ?? ""), preferred };
}

/** The node a GetCapacity accessible_topology names: undefined for none, null for another key only. */
export function topologyNode(
  t: { segments: Record<string, string> } | null | undefined,
): string | undefined | null {
  if (!t || Object.keys(t.segments).length === 0) return undefined;
  return t.segments[TOPOLOGY_KEY] ?? null;
}
