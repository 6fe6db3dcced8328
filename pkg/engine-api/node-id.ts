import { SnapblockError } from "../errors/index.js";

/**
 * Node ids name the node whose pool holds a volume or snapshot: the first part of every CSI id
 * ("<node-id>/<engine-name>", pkg/csi resource-id.ts), the topology segment, the engine service's
 * addressee. Restricted to [A-Za-z0-9._-], at most 63 characters, so that an id never carries a
 * path separator or "..", and fits the CSI spec's 128-byte string limit with the engine name.
 */
export const NODE_ID_MAX = 63;
const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** True for a valid node id (validateNodeId throws instead). */
export function isNodeId(text: string): boolean {
  return NODE_ID.test(text);
}

export function validateNodeId(nodeId: string): string {
  if (!NODE_ID.test(nodeId)) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `node id ${JSON.stringify(nodeId)} is invalid: use 1-${NODE_ID_MAX} letters, digits, '.', '_' or '-', starting with a letter or digit`,
    );
  }
  return nodeId;
}
