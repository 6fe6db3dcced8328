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
 * Whether a volume on this node satisfies accessibility_requirements. CSI spec,
 * TopologyRequirement: the volume MUST be accessible from at least one requisite topology; the
 * preferred list only orders choices among the requisite ones, so it does not restrict us.
 */
export function nodeSatisfies(req: TopologyRequirement__Output | null | undefined, nodeId: string): boolean {
  if (!req || req.requisite.length === 0) return true;
  return req.requisite.some((t) => t.segments[TOPOLOGY_KEY] === nodeId);
}

/** Whether a GetCapacity accessible_topology names this node (or nothing). */
export function topologyNamesNode(
  t: { segments: Record<string, string> } | null | undefined,
  nodeId: string,
): boolean {
  if (!t || Object.keys(t.segments).length === 0) return true;
  return t.segments[TOPOLOGY_KEY] === nodeId;
}
