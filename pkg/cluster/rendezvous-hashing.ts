import { createHash } from "node:crypto";

/**
 * Weighted rendezvous (highest-random-weight) hashing: every node gets a score for a key and the
 * highest wins, so the choice is deterministic, and adding or removing a node only moves the keys
 * that node wins or won. With weights, score = -w / ln(h) where h is the key+node hash mapped
 * uniformly into (0, 1); a node then wins a share of keys proportional to its weight (the
 * standard formula, e.g. Resch, "New Hashing Algorithms for Data Storage", and the weighted
 * rendezvous hashing literature).
 */
export interface WeightedNode {
  nodeId: string;
  /** Greater than 0 (here: free bytes of the node's pool). */
  weight: number;
}

export function rendezvousScore(key: string, node: WeightedNode): number {
  const digest = createHash("sha256").update(key).update("\0").update(node.nodeId).digest();
  // 52 bits fill a double's mantissa exactly; +0.5 keeps h strictly inside (0, 1).
  const bits = digest.readUIntBE(0, 6) * 16 + (digest.readUInt8(6) >> 4);
  const h = (bits + 0.5) / 2 ** 52;
  return -node.weight / Math.log(h);
}

/** Nodes ordered best first for key (ties, which need equal hashes, by node id). */
export function rankByRendezvous<T extends WeightedNode>(key: string, nodes: readonly T[]): T[] {
  return nodes
    .map((node) => ({ node, score: rendezvousScore(key, node) }))
    .sort((a, b) => b.score - a.score || (a.node.nodeId < b.node.nodeId ? -1 : 1))
    .map((s) => s.node);
}
