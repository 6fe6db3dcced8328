import { SnapblockError, isSnapblockError } from "../errors/index.js";
import {
  REPLICA_META,
  cloneSourceName,
  replicaName,
  type EngineApi,
  type EngineHolder,
  type EngineReplication,
  type EngineSnapshot,
  type EngineTombstone,
  type EngineVolume,
} from "../engine-api/index.js";
import type { Logger } from "../log/index.js";
import { volumeSnapshotOf, type EventRecorder } from "./event-recorder.js";
import { rankByRendezvous } from "./rendezvous-hashing.js";

/** A node's engine as the replicator needs it (RemoteEngine in production). */
export type ReplicaNode = EngineApi & EngineReplication;

/** What the replicator sees of the cluster (ClusterEngine provides it). */
export interface ClusterView {
  /** Every node discovery lists, with the address of its engine service. */
  members(): ReadonlyMap<string, { engine: ReplicaNode; address: string }>;
  /** True once a node has been unreachable (or unlisted) for the lost-node time. */
  isGone(nodeId: string): boolean;
  /** The node answered (or failed to answer) a call just now. */
  seen(nodeId: string, reachable: boolean): void;
}

export interface ReplicatorOptions {
  logger: Logger;
  events?: EventRecorder;
  /** Shortfalls and repairs, for metrics. */
  observer?: ReplicationObserver;
  now?: () => number;
}

export interface ReplicationObserver {
  /** After each reconcile: per snapshot, replicas wanted and complete. */
  replicaCounts?(counts: { origin: string; wanted: number; complete: number }[]): void;
  shortfall?(event: { origin: string; wanted: number; placed: number }): void;
  /** What a reconcile pass did. */
  repaired?(report: { added: string[]; dropped: string[]; deleted: string[]; redirected: string[] }): void;
  /** A snapshot reached its replica count: how long after it was taken. */
  replicated?(event: { origin: string; seconds: number }): void;
}

/** Replicator.status(): for operators (snapblock replicas). */
export interface ReplicationStatus {
  snapshots: {
    origin: string;
    wanted: number;
    /** Its own node answered and still has it. */
    atOrigin: boolean;
    replicas: { nodeId: string; complete: boolean; pendingChunks: number; totalChunks: number }[];
  }[];
  /** Volumes filling from another node's snapshot. */
  pulls: ({ nodeId: string; volume: string } & import("../engine-api/index.js").EnginePullProgress)[];
  /** Nodes that did not answer (what they hold is not shown). */
  unreachable: string[];
}

/** Split "<node>/<engine name>". */
export function splitOrigin(origin: string): { nodeId: string; name: string } {
  const slash = origin.indexOf("/");
  return { nodeId: origin.slice(0, slash), name: origin.slice(slash + 1) };
}

interface NodeListing {
  nodeId: string;
  snapshots: EngineSnapshot[];
  volumes: EngineVolume[];
  tombstones: EngineTombstone[];
}

/** A copy of a snapshot as far as deleting it goes: which incarnation, taken when. */
interface CopyIdentity {
  /** Engine id of the origin snapshot on its node (0: unknown). */
  originId: number;
  createdAtMs: number;
}

/**
 * Whether a tombstone buries this copy: the same incarnation or an older one. By engine id when
 * both are known (ids only grow on a node, so a snapshot made again under the same name is
 * never buried), else by time.
 */
export function buries(t: EngineTombstone, copy: CopyIdentity): boolean {
  if (t.id > 0 && copy.originId > 0) return copy.originId <= t.id;
  return copy.createdAtMs <= t.deletedAtMs;
}

/** The incarnation a listed snapshot (origin or replica) is of. */
function identityOf(s: EngineSnapshot): CopyIdentity {
  if (s.meta[REPLICA_META.origin] === undefined)
    return { originId: s.id, createdAtMs: s.createdAt.getTime() };
  const created = Number(s.meta[REPLICA_META.created]);
  return {
    originId: Number(s.meta[REPLICA_META.originId]) || 0,
    createdAtMs: Number.isFinite(created) && created > 0 ? created : s.createdAt.getTime(),
  };
}

interface OriginState {
  origin: string;
  wanted: number;
  sizeBytes: number;
  meta: Record<string, string>;
  /** The snapshot on its own node, when that node answered and has it. */
  atOrigin?: EngineSnapshot;
  /** Replicas by node: complete or still filling. */
  replicas: Map<string, EngineSnapshot>;
}

/**
 * Snapshots beyond one node (docs/cluster.md, "Snapshots on several nodes"): a snapshot is kept
 * on its own node and on the next `replicas` nodes of the rendezvous order for its id (the
 * successor list of a consistent-hashing ring), copied incrementally from an earlier replica of
 * the same volume when one is there. The controller is the only one that decides: nodes copy
 * what they are asked to, from holders they are granted.
 *
 * reconcile() is the repair loop (Chord's successor-list repair): deleted snapshots leave every
 * holder (tombstones tell holders that were down), snapshots whose node is gone get their copies
 * back to 1 + replicas from the survivors, a returning node's extra copies are dropped once
 * enough complete ones exist, and pulls stalled on a lost holder are pointed at the others.
 */
export class Replicator {
  /** The latest tombstone seen per snapshot id. */
  private readonly tombstones = new Map<string, EngineTombstone>();
  /** Snapshots whose replication time was reported (each once per controller run). */
  private readonly reported = new Set<string>();

  constructor(
    private readonly view: ClusterView,
    private readonly o: ReplicatorOptions,
  ) {}

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }

  /** Whether `snapshot` (on node of `origin`, or a replica of it) was deleted. */
  isBuried(origin: string, snapshot: EngineSnapshot): boolean {
    const t = this.tombstones.get(origin);
    return t !== undefined && buries(t, identityOf(snapshot));
  }

  private remember(t: EngineTombstone): void {
    const known = this.tombstones.get(t.origin);
    if (!known || t.id > known.id || (t.id === known.id && t.deletedAtMs > known.deletedAtMs)) {
      this.tombstones.set(t.origin, t);
    }
  }

  /**
   * Live nodes in the successor order for `origin` (its own node excluded). The order is that of
   * the snapshot's volume (`key`) when known, so that the replicas of one volume's snapshots land
   * on the same nodes and each can start from the one before (incremental copies).
   */
  successors(origin: string, key: string = origin): string[] {
    const { nodeId } = splitOrigin(origin);
    const ids = [...this.view.members().keys()].filter((id) => id !== nodeId && !this.view.isGone(id));
    return rankByRendezvous(
      key,
      ids.map((id) => ({ nodeId: id, weight: 1 })),
    ).map((n) => n.nodeId);
  }

  /**
   * The hidden snapshot a clone of volume `volume` on node `nodeId` onto another node copies
   * from (made now, or found from an earlier attempt of the same CreateVolume).
   */
  async cloneSource(nodeId: string, volume: string, target: string): Promise<string> {
    const m = this.view.members().get(nodeId);
    if (!m) throw new SnapblockError("CLOSED", `node ${nodeId} holding volume ${volume} is not reachable`);
    const name = cloneSourceName(target);
    const existing = await m.engine.getSnapshot(name);
    if (existing) return name;
    await m.engine.createSnapshot({ volume, name, meta: { [REPLICA_META.cloneFor]: target } });
    return name;
  }

  /** A snapshot (or replica) on one node, or undefined if the node does not answer or lacks it. */
  snapshotOn(nodeId: string, name: string): Promise<EngineSnapshot | undefined> {
    const m = this.view.members().get(nodeId);
    return m ? this.ask(nodeId, () => m.engine.getSnapshot(name)) : Promise.resolve(undefined);
  }

  /** Nodes holding `origin` whole (its own node first, then replicas in successor order). */
  async holdersOf(origin: string, exclude?: string): Promise<EngineHolder[]> {
    const { nodeId, name } = splitOrigin(origin);
    const members = this.view.members();
    const out: EngineHolder[] = [];
    const candidates: [string, string][] = [
      [nodeId, name],
      ...this.successors(origin).map((id): [string, string] => [id, replicaName(origin)]),
      // Replicas that ended up outside the successor list (before a node came back, say).
      ...[...members.keys()]
        .filter((id) => id !== nodeId && !this.successors(origin).includes(id))
        .map((id): [string, string] => [id, replicaName(origin)]),
    ];
    for (const [id, n] of candidates) {
      if (id === exclude) continue;
      const m = members.get(id);
      if (!m) continue;
      const s = await this.ask(id, () => m.engine.getSnapshot(n));
      if (s && !s.pull) out.push({ nodeId: id, address: m.address, name: n });
    }
    return out;
  }

  /**
   * The holders node `target` may copy `origin` from, each having granted it: what a cross-node
   * restore or a new replica needs. NOT_FOUND when no reachable node holds it.
   */
  async grantedHolders(target: string, origin: string): Promise<EngineHolder[]> {
    const holders = await this.holdersOf(origin, target);
    const members = this.view.members();
    const granted: EngineHolder[] = [];
    for (const h of holders) {
      const ok = await this.ask(h.nodeId, async () => {
        await members.get(h.nodeId)!.engine.grantPull(h.name, target);
        return true;
      });
      if (ok) granted.push(h);
    }
    if (granted.length === 0) {
      throw new SnapblockError(
        "CLOSED",
        `no reachable node holds snapshot ${origin} whole (its node and replicas are down or still copying)`,
      );
    }
    return granted;
  }

  /** After CreateSnapshot: make its replicas (in the background: the caller does not wait). */
  async replicate(origin: string, snapshot: EngineSnapshot): Promise<void> {
    const wanted = wantedOf(snapshot.meta);
    if (wanted <= 0) return;
    const state: OriginState = {
      origin,
      wanted,
      sizeBytes: snapshot.sizeBytes,
      meta: snapshot.meta,
      atOrigin: snapshot,
      replicas: new Map(),
    };
    await this.fillUp(state, await this.listings());
  }

  /**
   * DeleteSnapshot of `origin`: deleted on its node (BUSY there is the caller's error), recorded
   * as a tombstone on every node that answers (so holders that are down delete their copy when
   * they are back), and the replicas deleted. While some volume still fetches content from it,
   * the copies stay (hidden) until that is done.
   */
  async deleteEverywhere(origin: string): Promise<void> {
    const { nodeId, name } = splitOrigin(origin);
    const members = this.view.members();
    const listings = await this.listings();
    // Volumes restoring from it keep its copies; replicas still being made are copies themselves.
    const pullers = pullersOf(listings).get(origin) ?? [];
    const restoring = pullers.some((p) => p.kind === "volume");
    const own = members.get(nodeId);
    // Which incarnation is deleted: the snapshot's own id, else what a replica says.
    const atOwn = listings
      .find((l) => l.nodeId === nodeId)
      ?.snapshots.find((s) => s.name === name && s.meta[REPLICA_META.origin] === undefined);
    const fromReplica = listings
      .flatMap((l) => l.snapshots)
      .find((s) => s.meta[REPLICA_META.origin] === origin && Number(s.meta[REPLICA_META.originId]) > 0);
    const tombstone: EngineTombstone = {
      origin,
      id: atOwn?.id ?? (Number(fromReplica?.meta[REPLICA_META.originId]) || 0),
      deletedAtMs: this.now(),
    };
    // Replicas still arriving read from the snapshot (it is open while they do): delete them
    // first, so that the snapshot itself is free to go.
    if (!restoring && pullers.length > 0) await this.deleteReplicas(origin, listings, tombstone);
    if (own && !restoring) {
      let busy = false;
      const gone = await this.ask(nodeId, async () => {
        await own.engine.deleteSnapshot(name).catch((err: unknown) => {
          if (isSnapblockError(err, "NOT_FOUND")) return;
          if (!isSnapblockError(err, "BUSY")) throw err;
          busy = true;
        });
        return true;
      });
      if (busy) {
        this.o.logger.info("snapshot still being read on its node; the repair loop deletes it", { origin });
      } else if (gone === undefined && !this.view.isGone(nodeId)) {
        // Its node did not answer: the tombstones below make it delete the snapshot when it is back.
        this.o.logger.warn(
          "snapshot's node unreachable during delete; it will be deleted when the node is back",
          {
            origin,
          },
        );
      }
    }
    let recorded = 0;
    for (const l of listings) {
      const ok = await this.ask(l.nodeId, async () => {
        await members.get(l.nodeId)!.engine.addTombstones([tombstone]);
        return true;
      });
      if (ok) recorded++;
    }
    if (recorded === 0) {
      throw new SnapblockError("CLOSED", `no node could record the deletion of snapshot ${origin}; retry`);
    }
    this.remember(tombstone);
    if (restoring) return; // reconcile() deletes the copies once no volume pulls from them
    await this.deleteReplicas(origin, listings, tombstone);
  }

  /** What is where: every snapshot that wants replicas, its copies, and the copies in flight. */
  async status(): Promise<ReplicationStatus> {
    const listings = await this.listings();
    const reachable = new Set(listings.map((l) => l.nodeId));
    const snapshots = [...originsOf(listings).values()]
      .filter((st) => !(st.atOrigin && this.isBuried(st.origin, st.atOrigin)))
      .map((st) => ({
        origin: st.origin,
        wanted: st.wanted,
        atOrigin: st.atOrigin !== undefined,
        replicas: [...st.replicas.entries()]
          .map(([nodeId, s]) => ({
            nodeId,
            complete: !s.pull,
            pendingChunks: s.pull?.pendingChunks ?? 0,
            totalChunks: s.pull?.totalChunks ?? 0,
          }))
          .sort((a, b) => (a.nodeId < b.nodeId ? -1 : 1)),
      }))
      .sort((a, b) => (a.origin < b.origin ? -1 : 1));
    const pulls = listings.flatMap((l) =>
      l.volumes.filter((v) => v.pull).map((v) => ({ nodeId: l.nodeId, volume: v.name, ...v.pull! })),
    );
    return {
      snapshots,
      pulls,
      unreachable: [...this.view.members().keys()].filter((id) => !reachable.has(id)).sort(),
    };
  }

  /** One repair pass; returns what it did, for logs and tests. */
  async reconcile(): Promise<{
    deleted: string[];
    added: string[];
    dropped: string[];
    redirected: string[];
  }> {
    const report = {
      deleted: [] as string[],
      added: [] as string[],
      dropped: [] as string[],
      redirected: [] as string[],
    };
    const listings = await this.listings();
    const members = this.view.members();
    for (const t of listings.flatMap((l) => l.tombstones)) this.remember(t);
    const pullers = pullersOf(listings);
    const origins = originsOf(listings);

    // Deletions that holders missed while they were down (only the incarnation deleted: a
    // snapshot made again under the same name stays). Copies wait while a volume still restores
    // from them; a replica still being made is itself a copy to delete (a holder killed before
    // its replica's completion was durable comes back with it pulling from an origin that is
    // gone: waiting for it would wait forever).
    for (const t of this.tombstones.values()) {
      if ((pullers.get(t.origin) ?? []).some((p) => p.kind === "volume")) continue;
      const { nodeId, name } = splitOrigin(t.origin);
      let stone = t;
      for (const l of listings) {
        const engine = members.get(l.nodeId)!.engine;
        const target = l.nodeId === nodeId ? name : replicaName(t.origin);
        const copy = l.snapshots.find(
          (s) =>
            s.name === target &&
            (l.nodeId === nodeId
              ? s.meta[REPLICA_META.origin] === undefined
              : s.meta[REPLICA_META.origin] === t.origin),
        );
        if (copy && buries(stone, identityOf(copy))) {
          const done = await this.ask(l.nodeId, async () => {
            await engine.deleteSnapshot(target);
            return true;
          });
          if (done) report.deleted.push(`${l.nodeId}/${target}`);
          // The snapshot itself: now its incarnation is known, say so everywhere.
          if (done && l.nodeId === nodeId && stone.id === 0) {
            stone = { ...stone, id: copy.id };
            this.remember(stone);
          }
        }
      }
      for (const l of listings) {
        const has = l.tombstones.find((x) => x.origin === stone.origin);
        if (!has || has.id < stone.id) {
          await this.ask(l.nodeId, () => members.get(l.nodeId)!.engine.addTombstones([stone]));
        }
      }
    }

    const counts: { origin: string; wanted: number; complete: number }[] = [];
    for (const state of origins.values()) {
      const t = this.tombstones.get(state.origin);
      const copy = state.atOrigin ?? [...state.replicas.values()][0];
      if (t && copy && buries(t, identityOf(copy))) continue;
      const { nodeId } = splitOrigin(state.origin);
      const originListed = listings.some((l) => l.nodeId === nodeId);
      // A node that is only unreachable for a while keeps its place: no repair storm on a blip.
      if (!originListed && !this.view.isGone(nodeId)) continue;
      const complete = [...state.replicas.values()].filter((s) => !s.pull).length + (state.atOrigin ? 1 : 0);
      counts.push({
        origin: state.origin,
        wanted: state.wanted,
        complete: complete - (state.atOrigin ? 1 : 0),
      });
      if (complete >= state.wanted + 1 && state.atOrigin && !this.reported.has(state.origin)) {
        this.reported.add(state.origin);
        this.o.observer?.replicated?.({
          origin: state.origin,
          seconds: Math.max(0, (this.now() - state.atOrigin.createdAt.getTime()) / 1000),
        });
      }
      const copies = state.replicas.size + (state.atOrigin ? 1 : 0);
      if (copies < state.wanted + 1) report.added.push(...(await this.fillUp(state, listings)));
      else if (complete > state.wanted + 1) report.dropped.push(...(await this.dropExtras(state)));
    }
    this.o.observer?.replicaCounts?.(counts);
    for (const origin of this.reported) if (!origins.has(origin)) this.reported.delete(origin);

    // Hidden snapshots of cross-node clones: gone once nothing copies from them any more (and
    // not in the first minute, while their CreateVolume may still be on its way to the target).
    for (const l of listings) {
      for (const s of l.snapshots) {
        if (s.meta[REPLICA_META.cloneFor] === undefined) continue;
        const origin = `${l.nodeId}/${s.name}`;
        if (
          (pullers.get(origin) ?? []).length > 0 ||
          this.now() - s.createdAt.getTime() < CLONE_SOURCE_GRACE_MS
        )
          continue;
        const done = await this.ask(l.nodeId, async () => {
          await members.get(l.nodeId)!.engine.deleteSnapshot(s.name);
          return true;
        });
        if (done) report.deleted.push(origin);
      }
    }

    // Pulls stalled on a holder that is gone: point them at the holders there are now.
    for (const [origin, list] of pullers) {
      for (const p of list.filter((x) => x.state === "stalled")) {
        const holders = await this.grantedHolders(p.nodeId, origin).catch(() => []);
        if (holders.length === 0) continue;
        const ok = await this.ask(p.nodeId, async () => {
          await members.get(p.nodeId)!.engine.setHolders(origin, holders);
          return true;
        });
        if (ok) report.redirected.push(`${p.nodeId}:${origin}`);
      }
    }
    this.o.observer?.repaired?.(report);
    return report;
  }

  /** Adds replicas on successors until 1 + wanted copies exist; returns "node:origin" added. */
  private async fillUp(state: OriginState, listings: NodeListing[]): Promise<string[]> {
    const members = this.view.members();
    const have = new Set(state.replicas.keys());
    const { nodeId } = splitOrigin(state.origin);
    if (state.atOrigin) have.add(nodeId);
    let need = state.wanted + 1 - have.size;
    const added: string[] = [];
    for (const target of this.successors(state.origin, keyOf(state))) {
      if (need <= 0) break;
      if (have.has(target) || !listings.some((l) => l.nodeId === target)) continue;
      const engine = members.get(target)!.engine;
      try {
        const holders = await this.grantedHolders(target, state.origin);
        const base = baseFor(
          listings.find((l) => l.nodeId === target)!,
          state.meta[REPLICA_META.volume],
          state.origin,
        );
        await engine.replicateSnapshot({
          origin: state.origin,
          sizeBytes: state.sizeBytes,
          holders,
          ...(base ? { baseOrigin: base } : {}),
          meta: replicaMeta(state),
        });
        this.view.seen(target, true);
        have.add(target);
        added.push(`${target}:${state.origin}`);
        need--;
      } catch (err) {
        // Full, down or refusing: the next successor takes it.
        this.o.logger.warn("a node could not take a snapshot replica; trying the next successor", {
          origin: state.origin,
          node: target,
          err,
        });
        if (isSnapblockError(err, "CLOSED")) this.view.seen(target, false);
      }
    }
    if (need > 0) {
      const placed = have.size - 1;
      this.o.observer?.shortfall?.({ origin: state.origin, wanted: state.wanted, placed });
      const message = `snapshot ${state.origin} wants ${state.wanted} replica(s) and has ${placed}: not enough nodes with room are reachable (it stays usable; replicas are added when nodes can take them)`;
      this.o.logger.warn("snapshot replica shortfall", {
        origin: state.origin,
        wanted: state.wanted,
        placed,
      });
      const vs = volumeSnapshotOf(state.meta);
      if (vs) this.o.events?.record({ involved: vs, type: "Warning", reason: "ReplicaShortfall", message });
    } else if (added.length > 0) {
      const vs = volumeSnapshotOf(state.meta);
      if (vs) {
        this.o.events?.record({
          involved: vs,
          type: "Normal",
          reason: "ReplicasStarted",
          message: `copying snapshot ${state.origin} to ${added.map((a) => a.split(":")[0]).join(", ")}`,
        });
      }
    }
    return added;
  }

  /** Drops complete replicas beyond 1 + wanted copies, keeping the first successors. */
  private async dropExtras(state: OriginState): Promise<string[]> {
    const members = this.view.members();
    const order = this.successors(state.origin, keyOf(state));
    const complete = [...state.replicas.entries()]
      .filter(([, s]) => !s.pull)
      .map(([id]) => id)
      .sort((a, b) => rank(order, a) - rank(order, b));
    const keep = state.wanted + 1 - (state.atOrigin ? 1 : 0);
    const dropped: string[] = [];
    for (const id of complete.slice(Math.max(0, keep))) {
      const ok = await this.ask(id, async () => {
        await members.get(id)!.engine.deleteSnapshot(replicaName(state.origin));
        return true;
      });
      if (ok) dropped.push(`${id}:${state.origin}`);
    }
    return dropped;
  }

  private async deleteReplicas(origin: string, listings: NodeListing[], t: EngineTombstone): Promise<void> {
    const members = this.view.members();
    const name = replicaName(origin);
    for (const l of listings) {
      const copy = l.snapshots.find((s) => s.name === name && s.meta[REPLICA_META.origin] === origin);
      if (!copy || !buries(t, identityOf(copy))) continue;
      await this.ask(l.nodeId, async () => {
        await members
          .get(l.nodeId)!
          .engine.deleteSnapshot(name)
          .catch((err: unknown) => {
            if (!isSnapblockError(err, "NOT_FOUND")) throw err;
          });
        return true;
      });
    }
  }

  /** What every reachable node holds (unreachable ones are left out and marked). */
  private async listings(): Promise<NodeListing[]> {
    const out: NodeListing[] = [];
    await Promise.all(
      [...this.view.members()].map(async ([nodeId, m]) => {
        const listing = await this.ask(nodeId, async () => {
          const [snapshots, volumes, tombstones] = await Promise.all([
            m.engine.listSnapshots(),
            m.engine.listVolumes(),
            m.engine.listTombstones(),
          ]);
          return { nodeId, snapshots: snapshots.items, volumes: volumes.items, tombstones };
        });
        if (listing) out.push(listing);
      }),
    );
    return out.sort((a, b) => (a.nodeId < b.nodeId ? -1 : 1));
  }

  /** Runs a call on a node; undefined (and the node marked unreachable) if it cannot answer. */
  private async ask<T>(nodeId: string, call: () => Promise<T>): Promise<T | undefined> {
    try {
      const result = await call();
      this.view.seen(nodeId, true);
      return result;
    } catch (err) {
      if (!isSnapblockError(err, "CLOSED")) {
        this.o.logger.warn("replication call failed", { node: nodeId, err });
        return undefined;
      }
      this.view.seen(nodeId, false);
      return undefined;
    }
  }
}

/** The rendezvous key of a snapshot's replicas: its volume (see Replicator.successors). */
function keyOf(state: OriginState): string {
  return state.meta[REPLICA_META.volume] ?? state.origin;
}

/** How long a cross-node clone's hidden snapshot is kept before anyone copies from it. */
const CLONE_SOURCE_GRACE_MS = 60_000;

function wantedOf(meta: Record<string, string>): number {
  const n = Number(meta[REPLICA_META.replicas] ?? "0");
  return Number.isInteger(n) && n > 0 ? n : 0;
}

function rank(order: string[], id: string): number {
  const i = order.indexOf(id);
  return i < 0 ? Number.MAX_SAFE_INTEGER : i;
}

/** The meta a replica carries: the snapshot's own (CSI name, wanted count, volume) and its origin. */
function replicaMeta(state: OriginState): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(state.meta)) {
    if (k === REPLICA_META.pullGrants || k === REPLICA_META.holders) continue;
    out[k] = v;
  }
  out[REPLICA_META.origin] = state.origin;
  if (state.atOrigin) {
    out[REPLICA_META.created] ??= String(state.atOrigin.createdAt.getTime());
    out[REPLICA_META.originId] ??= String(state.atOrigin.id);
  }
  return out;
}

/** The newest complete replica on a node of another snapshot of the same volume: the base. */
function baseFor(listing: NodeListing, volume: string | undefined, origin: string): string | undefined {
  if (!volume) return undefined;
  const candidates = listing.snapshots.filter(
    (s) =>
      !s.pull &&
      s.meta[REPLICA_META.volume] === volume &&
      s.meta[REPLICA_META.origin] !== undefined &&
      s.meta[REPLICA_META.origin] !== origin,
  );
  candidates.sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime());
  return candidates[0]?.meta[REPLICA_META.origin];
}

/** Every snapshot that wants replicas, with its copies as the listings show them. */
function originsOf(listings: NodeListing[]): Map<string, OriginState> {
  const out = new Map<string, OriginState>();
  const state = (origin: string, s: EngineSnapshot): OriginState => {
    let st = out.get(origin);
    if (!st) {
      st = {
        origin,
        wanted: wantedOf(s.meta),
        sizeBytes: s.sizeBytes,
        meta: { ...s.meta },
        replicas: new Map(),
      };
      out.set(origin, st);
    }
    return st;
  };
  // The snapshots themselves first, then their replicas: a replica of another incarnation of the
  // same name (deleted, made again) is not a copy of this one.
  for (const l of listings) {
    for (const s of l.snapshots) {
      if (s.meta[REPLICA_META.origin] === undefined && wantedOf(s.meta) > 0) {
        const st = state(`${l.nodeId}/${s.name}`, s);
        st.atOrigin = s;
        st.meta = { ...s.meta };
      }
    }
  }
  for (const l of listings) {
    for (const s of l.snapshots) {
      const of = s.meta[REPLICA_META.origin];
      if (of === undefined) continue;
      const st = state(of, s);
      const id = Number(s.meta[REPLICA_META.originId]) || 0;
      if (st.atOrigin && id > 0 && id !== st.atOrigin.id) continue;
      st.replicas.set(l.nodeId, s);
    }
  }
  return out;
}

/** Devices still filling from each origin: node, name, pull state. */
interface Puller {
  nodeId: string;
  name: string;
  state: string;
  /** A volume restoring from the origin, or a snapshot: a replica of it being made. */
  kind: "volume" | "snapshot";
}

function pullersOf(listings: NodeListing[]): Map<string, Puller[]> {
  const out = new Map<string, Puller[]>();
  const add = (
    nodeId: string,
    d: { name: string; pull?: { origin: string; state: string } },
    kind: Puller["kind"],
  ) => {
    if (!d.pull) return;
    const list = out.get(d.pull.origin) ?? [];
    list.push({ nodeId, name: d.name, state: d.pull.state, kind });
    out.set(d.pull.origin, list);
  };
  for (const l of listings) {
    for (const v of l.volumes) add(l.nodeId, v, "volume");
    for (const s of l.snapshots) add(l.nodeId, s, "snapshot");
  }
  return out;
}
