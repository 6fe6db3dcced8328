import { SnapblockError, isSnapblockError } from "../errors/index.js";
import {
  REPLICA_META,
  replicaName,
  type EngineApi,
  type EngineCreateSnapshotOptions,
  type EngineCreateVolumeOptions,
  type EngineListing,
  type EngineSnapshot,
  type EngineVolume,
} from "../engine-api/index.js";
import type { Logger } from "../log/index.js";
import type { Replicator } from "./replicator.js";

/**
 * A node's engine as the CSI controller sees it in cluster mode, with snapshots beyond that node
 * folded in (the controller code stays the same as in local mode):
 *
 * - a restore onto this node of a snapshot on another node gets the holders it may copy from
 *   (each granting this node), so the volume is ready at once and fills from them;
 * - CreateSnapshot starts the snapshot's replicas in the background (its VolumeSnapshotClass
 *   asked for them); DeleteSnapshot removes every copy (tombstones for holders that are down);
 * - a snapshot whose node does not answer is still found, read from a complete replica;
 * - replicas are nobody's CSI snapshots: listings leave them out, and deleted snapshots whose
 *   copies are kept for a running restore are hidden.
 */
export function replicaAware<E extends EngineApi>(engine: E, replicator: Replicator, logger: Logger): E {
  const node = engine.nodeId;
  const visible = (s: EngineSnapshot): boolean =>
    s.meta[REPLICA_META.origin] === undefined &&
    s.meta[REPLICA_META.cloneFor] === undefined &&
    !replicator.isBuried(`${node}/${s.name}`, s);
  const overrides: Partial<EngineApi> = {
    async createVolume(o: EngineCreateVolumeOptions): Promise<EngineVolume> {
      const from = o.source?.nodeId;
      if (!o.source || from === undefined || from === node) return engine.createVolume(o);
      let name = o.source.name;
      if (o.source.kind === "volume") {
        // A clone across nodes: snapshot the volume where it is (hidden, removed by the repair
        // loop once the copy is done) and restore that here.
        name = await replicator.cloneSource(from, o.source.name, `${node}/${o.name}`);
      }
      const origin = `${from}/${name}`;
      const holders = await replicator.grantedHolders(node, origin);
      return engine.createVolume({ ...o, source: { kind: "snapshot", name, nodeId: from, holders } });
    },
    async createSnapshot(o: EngineCreateSnapshotOptions): Promise<EngineSnapshot> {
      const snapshot = await engine.createSnapshot(o);
      const origin = `${node}/${snapshot.name}`;
      void replicator.replicate(origin, snapshot).catch((err: unknown) => {
        logger.error("starting a snapshot's replicas failed; the repair loop retries", { origin, err });
      });
      return snapshot;
    },
    async getSnapshot(name: string): Promise<EngineSnapshot | undefined> {
      const origin = `${node}/${name}`;
      try {
        const s = await engine.getSnapshot(name);
        return s && visible(s) ? s : undefined;
      } catch (err) {
        if (!isSnapblockError(err, "CLOSED")) throw err;
        // Its node does not answer: a complete replica speaks for it.
        const [holder] = await replicator.holdersOf(origin, node);
        if (!holder) throw err;
        logger.info("snapshot's node unavailable; answering from a replica", {
          origin,
          holder: holder.nodeId,
        });
        return { ...replicaAsOrigin(await replicaSnapshot(replicator, holder.nodeId, origin)), name };
      }
    },
    async listSnapshots(): Promise<EngineListing<EngineSnapshot>> {
      const l = await engine.listSnapshots();
      return { items: l.items.filter(visible), idWatermark: l.idWatermark };
    },
    async deleteSnapshot(name: string): Promise<void> {
      await replicator.deleteEverywhere(`${node}/${name}`);
    },
  };
  return new Proxy(engine, {
    get: (target, prop): unknown => {
      if (typeof prop === "string" && prop in overrides) return overrides[prop as keyof EngineApi];
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

async function replicaSnapshot(
  replicator: Replicator,
  nodeId: string,
  origin: string,
): Promise<EngineSnapshot> {
  const found = await replicator.snapshotOn(nodeId, replicaName(origin));
  if (!found) throw new SnapblockError("CLOSED", `the replica of ${origin} on ${nodeId} went away`);
  return found;
}

/** A replica described as the snapshot it copies (its CSI identity is the origin's). */
function replicaAsOrigin(s: EngineSnapshot): EngineSnapshot {
  const meta: Record<string, string> = {};
  for (const [k, v] of Object.entries(s.meta)) {
    if (k !== REPLICA_META.origin && k !== REPLICA_META.created) meta[k] = v;
  }
  const volume = s.meta[REPLICA_META.volume];
  const created = Number(s.meta[REPLICA_META.created]);
  return {
    ...s,
    meta,
    sourceVolume: volume ? volume.slice(volume.indexOf("/") + 1) : s.sourceVolume,
    ...(Number.isFinite(created) && created > 0 ? { createdAt: new Date(created) } : {}),
  };
}
