import { isNodeId } from "../engine-api/index.js";
import { isEngineName } from "./engine-names.js";

/**
 * Volume and snapshot ids handed to the CO: "<node-id>/<engine-name>".
 *
 * The node part says which node's pool holds the data, so that in cluster mode the controller can
 * route every later call to that node's engine service (and volumes from a snapshot land where
 * the data is); local mode has one fixed node id. The engine name is the pool's own name for the
 * volume or snapshot. Both parts are restricted to [A-Za-z0-9._-] (the engine name also starting
 * with a letter or digit), so an id can never carry a path separator, "..", or anything that
 * needs quoting when it ends up in a file name, an NBD export name or a log line. With node ids of
 * at most 63 characters and engine names of at most 64 (engine-names.ts) an id fits the CSI
 * spec's general 128-byte string limit.
 */
export interface ResourceId {
  nodeId: string;
  engineName: string;
}

export function formatResourceId(id: ResourceId): string {
  return `${id.nodeId}/${id.engineName}`;
}

/**
 * Parses an id. Returns undefined for a string that cannot be one of our ids: the caller answers
 * NOT_FOUND (CSI spec: an unknown volume_id/snapshot_id is NOT_FOUND) or OK for deletes.
 */
export function parseResourceId(id: string): ResourceId | undefined {
  const slash = id.indexOf("/");
  if (slash <= 0) return undefined;
  const nodeId = id.slice(0, slash);
  const engineName = id.slice(slash + 1);
  if (!isNodeId(nodeId) || !isEngineName(engineName)) return undefined;
  return { nodeId, engineName };
}
