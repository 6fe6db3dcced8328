import { status, type ServiceError } from "@grpc/grpc-js";
import { parseResourceId } from "../pkg/csi/index.js";
import type { EngineSnapshotSpace, EngineSpace, EngineVolumeSpace } from "../pkg/engine-api/index.js";
import { fetchSpace } from "../pkg/engine-service/index.js";
import { formatByteSize } from "../pkg/byte-size/index.js";
import type { OperatorConnection } from "./operator-connection.js";
import { OperatorError } from "./operator-error.js";

/**
 * Who holds the space, for the operator verbs (`snapshot list/get`, `volume get`): the Space
 * service beside CSI on the same socket, indexed by CSI id (<node-id>/<engine-name>). A server
 * without that service (an older snapblock) gives no figures rather than an error.
 */
export class SpaceFigures {
  private constructor(private readonly nodes: Map<string, EngineSpace>) {}

  static async fetch(conn: OperatorConnection): Promise<SpaceFigures | undefined> {
    try {
      const reports = await fetchSpace(`unix:${conn.socketPath}`);
      return new SpaceFigures(new Map(reports.flatMap((r) => (r.space ? [[r.nodeId, r.space]] : []))));
    } catch (err) {
      if ((err as ServiceError).code === status.UNIMPLEMENTED) return undefined;
      throw new OperatorError(
        `reading the pools' space failed: ${(err as ServiceError).details ?? String(err)}`,
        (err as ServiceError).code ?? status.UNKNOWN,
      );
    }
  }

  snapshot(id: string): EngineSnapshotSpace | undefined {
    const ref = parseResourceId(id);
    return ref ? this.nodes.get(ref.nodeId)?.snapshots.find((s) => s.name === ref.engineName) : undefined;
  }

  volume(id: string): EngineVolumeSpace | undefined {
    const ref = parseResourceId(id);
    return ref ? this.nodes.get(ref.nodeId)?.volumes.find((v) => v.name === ref.engineName) : undefined;
  }

  /** The pool holding the volume or snapshot `id`. */
  pool(id: string): { nodeId: string; pool: EngineSpace["pool"] } | undefined {
    const ref = parseResourceId(id);
    const space = ref ? this.nodes.get(ref.nodeId) : undefined;
    return ref && space ? { nodeId: ref.nodeId, pool: space.pool } : undefined;
  }
}

/** "12.5 GiB of 100 GiB (12%)" */
export function poolLine(p: EngineSpace["pool"]): string {
  const percent = p.totalBytes > 0 ? Math.floor((p.allocatedBytes / p.totalBytes) * 100) : 0;
  const overcommit = p.totalBytes > 0 ? p.provisionedBytes / p.totalBytes : 0;
  return `${formatByteSize(p.allocatedBytes)} used of ${formatByteSize(p.totalBytes)} (${percent}%), ${formatByteSize(p.freeBytes)} free, provisioned ${overcommit.toFixed(2)}x of ${p.overcommitRatio}x allowed`;
}
