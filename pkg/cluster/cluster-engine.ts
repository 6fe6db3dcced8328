import { SnapblockError, isSnapblockError, StatusError } from "../errors/index.js";
import { CopyEvents } from "./copy-events.js";
import { pvcOf, type EventRecorder } from "./event-recorder.js";
import { MissingNodeEngine } from "./missing-node-engine.js";
import type { NodeDiscovery, NodeEndpoint } from "./node-discovery.js";
import { rankByRendezvous } from "./rendezvous-hashing.js";
import { replicaAware } from "./replica-aware-engine.js";
import { Replicator, type ClusterView, type ReplicationObserver } from "./replicator.js";
import type { Logger } from "../log/index.js";
import type {
  EngineApi,
  EngineBlockMetadataPage,
  EngineBlockMetadataRequest,
  EngineCapacity,
  EngineCreateSnapshotOptions,
  EngineCreateSnapshotGroupOptions,
  EngineMeta,
  EngineCreateVolumeOptions,
  EngineListing,
  EnginePlacementRequest,
  EnginePointPins,
  EngineReplication,
  EngineSnapshot,
  EngineSpace,
  EngineVolume,
} from "../engine-api/index.js";

/** A node's engine as the cluster holds it: RemoteEngine in production. */
export type NodeEngine = EngineApi & EngineReplication & EnginePointPins & { close(): void };

export interface ClusterEngineOptions {
  discovery: NodeDiscovery;
  /** Makes the engine of a discovered node (a RemoteEngine with the controller's TLS files). */
  connect: (endpoint: NodeEndpoint) => NodeEngine;
  logger: Logger;
  /** Where placement failures and background copies are reported for people (Events on the PVC). */
  events?: EventRecorder;
  /** How often a full background copy's progress is checked for its end Event (default 5 s). */
  copyPollMs?: number;
  /**
   * A node unreachable (or unlisted) this long is gone: the snapshots it held are copied again
   * from the survivors (default 10 minutes).
   */
  lostAfterMs?: number;
  replicationObserver?: ReplicationObserver;
  now?: () => number;
}

interface Member {
  endpoint: NodeEndpoint;
  engine: NodeEngine;
}

interface Probe {
  nodeId: string;
  engine: NodeEngine;
  capacity?: EngineCapacity;
  holds?: boolean;
  error?: unknown;
}

/**
 * The EngineApi of the controller in cluster mode: the engines of every discovered node behind
 * one interface. Ids carry their node, so the controller resolves them with engineFor() and each
 * call goes straight to that node; placeVolume() chooses the node of a new volume (the rule is in
 * docs/cluster.md). The data methods by name below exist for completeness of the interface (and
 * operator tooling): they search the nodes, which the CSI controller never needs to do.
 */
export class ClusterEngine implements EngineApi, EnginePointPins {
  readonly nodeId = "cluster";
  private members = new Map<string, Member>();
  private discovered = false;
  /** Since when a node has failed to answer (cleared when it answers). */
  private readonly downSince = new Map<string, number>();
  /** Since when a node known before is no longer listed by discovery. */
  private readonly unlistedSince = new Map<string, number>();
  private readonly startedAt: number;
  readonly replicator: Replicator;

  private readonly copyEvents: CopyEvents | undefined;

  constructor(private readonly options: ClusterEngineOptions) {
    this.copyEvents = options.events
      ? new CopyEvents({
          events: options.events,
          ...(options.copyPollMs ? { pollMs: options.copyPollMs } : {}),
        })
      : undefined;
    this.startedAt = this.now();
    const view: ClusterView = {
      members: () =>
        new Map([...this.members].map(([id, m]) => [id, { engine: m.engine, address: m.endpoint.address }])),
      isGone: (id) => {
        // Down (or unlisted) for the whole lost-node time; a node this controller never knew is
        // gone once the controller has been up that long.
        const since = this.members.has(id)
          ? this.downSince.get(id)
          : (this.unlistedSince.get(id) ?? this.startedAt);
        return since !== undefined && this.now() - since >= (options.lostAfterMs ?? 600_000);
      },
      seen: (id, reachable) => {
        if (reachable) this.downSince.delete(id);
        else if (!this.downSince.has(id)) this.downSince.set(id, this.now());
      },
    };
    this.replicator = new Replicator(view, {
      logger: options.logger,
      ...(options.events ? { events: options.events } : {}),
      ...(options.replicationObserver ? { observer: options.replicationObserver } : {}),
    });
  }

  private now(): number {
    return this.options.now?.() ?? Date.now();
  }

  /** The node's engine as the CSI controller uses it (snapshots beyond the node folded in). */
  private facade<E extends EngineApi>(engine: E): E {
    return replicaAware(engine, this.replicator, this.options.logger);
  }

  /** Asks discovery again: connects new nodes, drops gone ones, reconnects moved ones. */
  async refresh(): Promise<void> {
    const endpoints = await this.options.discovery.nodes();
    const next = new Map<string, Member>();
    const made: Member[] = [];
    try {
      for (const endpoint of endpoints) {
        const current = this.members.get(endpoint.nodeId);
        if (current && current.endpoint.address === endpoint.address) next.set(endpoint.nodeId, current);
        else {
          const member = { endpoint, engine: this.options.connect(endpoint) };
          made.push(member);
          next.set(endpoint.nodeId, member);
        }
      }
    } catch (err) {
      // All or nothing: a bad entry leaves the known nodes as they were and leaks no channel.
      for (const m of made) m.engine.close();
      throw err;
    }
    for (const member of made) {
      this.members.get(member.endpoint.nodeId)?.engine.close();
      this.options.logger.info("node engine added", {
        node: member.endpoint.nodeId,
        address: member.endpoint.address,
      });
    }
    for (const [id, member] of this.members) {
      if (!next.has(id)) {
        member.engine.close();
        this.unlistedSince.set(id, this.now());
        this.options.logger.info("node engine removed", { node: id });
      }
    }
    for (const id of next.keys()) this.unlistedSince.delete(id);
    this.members = next;
    this.discovered = true;
  }

  close(): void {
    this.copyEvents?.close();
    for (const m of this.members.values()) m.engine.close();
    this.members.clear();
  }

  /** The controller is ready once it knows its nodes; a node down fails only its own calls. */
  isReady(): boolean {
    return this.discovered;
  }

  /** Pins too: a recovery point is pinned on the node that holds it (and thins it). */
  engineFor(nodeId: string): EngineApi & EnginePointPins {
    return this.facade(this.members.get(nodeId)?.engine ?? new MissingNodeEngine(nodeId));
  }

  nodeEngines(): EngineApi[] {
    return [...this.members.values()]
      .sort((a, b) => (a.endpoint.nodeId < b.endpoint.nodeId ? -1 : 1))
      .map((m) => this.facade(m.engine));
  }

  async placeVolume(request: EnginePlacementRequest): Promise<EngineApi> {
    try {
      const target = this.facade(await this.place(request));
      // A full-copy restore or clone created through it gets start and end Events on its PVC.
      return this.copyEvents ? this.copyEvents.wrap(target, pvcOf(request.parameters ?? {})) : target;
    } catch (err) {
      // The CO retries and logs the status; an Event tells the PVC's owner why it stays Pending.
      const pvc = pvcOf(request.parameters ?? {});
      if (pvc && this.options.events && err instanceof SnapblockError) {
        this.options.events.record({
          involved: pvc,
          type: "Warning",
          reason: "PlacementFailed",
          message: err.message,
        });
      }
      throw err;
    }
  }

  private async place(request: EnginePlacementRequest): Promise<EngineApi> {
    const { requisite, sourceNodeId } = request;
    if (sourceNodeId !== undefined) {
      // Where the data is, unless the request wants another node (the pod's node, chosen by the
      // scheduler) or the data's node cannot take it: then the volume is made there and fills
      // from the snapshot's holders (cross-node restore).
      const allowed = !requisite || requisite.includes(sourceNodeId);
      const wantsOther = request.preferred.length > 0 && request.preferred[0] !== sourceNodeId;
      const source = this.members.get(sourceNodeId);
      if (allowed && !wantsOther && source) {
        const probe = await this.probe(sourceNodeId, request.name);
        if (probe.holds || (probe.capacity && probe.capacity.availableBytes >= request.sizeBytes))
          return source.engine;
      }
    }
    const candidates = requisite ? requisite.filter((id) => this.members.has(id)) : [...this.members.keys()];
    if (candidates.length === 0) {
      throw new StatusError(
        "RESOURCE_EXHAUSTED",
        requisite
          ? `accessibility_requirements allow only node(s) ${requisite.join(", ")}, which this controller does not know`
          : "this controller knows no nodes (node discovery is empty)",
      );
    }
    const probes = await Promise.all(candidates.map((id) => this.probe(id, request.name)));
    const holder = probes.find((p) => p.holds);
    if (holder) return holder.engine;
    const reachable = probes.filter((p) => p.capacity !== undefined);
    const roomy = reachable.filter(
      (p) =>
        p.capacity!.availableBytes >= request.sizeBytes && p.capacity!.maxVolumeBytes >= request.sizeBytes,
    );
    if (roomy.length === 0) {
      const down = probes.filter((p) => p.error !== undefined);
      if (down.length > 0) {
        // Some allowed node could not answer: it may have room when it is back, so the CO retries.
        throw new SnapblockError(
          "CLOSED",
          `no reachable node can take ${request.sizeBytes} bytes; unavailable: ${down.map((p) => `${p.nodeId} (${message(p.error)})`).join("; ")}`,
        );
      }
      throw new StatusError(
        "RESOURCE_EXHAUSTED",
        `no node has room for ${request.sizeBytes} bytes: ${reachable.map((p) => `${p.nodeId} can provision ${p.capacity!.availableBytes}`).join(", ")}`,
      );
    }
    const preferred = request.preferred.map((id) => roomy.find((p) => p.nodeId === id)).find((p) => p);
    if (preferred) return preferred.engine;
    const ranked = rankByRendezvous(
      request.name,
      roomy.map((p) => ({
        nodeId: p.nodeId,
        weight: Math.max(1, p.capacity!.availableBytes),
        engine: p.engine,
      })),
    );
    return ranked[0]!.engine;
  }

  private async probe(nodeId: string, name: string): Promise<Probe> {
    const engine = this.members.get(nodeId)!.engine;
    try {
      const [capacity, existing] = await Promise.all([engine.capacity(), engine.getVolume(name)]);
      return { nodeId, engine, capacity, holds: existing !== undefined };
    } catch (error) {
      if (!isSnapblockError(error, "CLOSED")) throw error;
      this.options.logger.warn("node engine unavailable during placement", { node: nodeId, err: error });
      return { nodeId, engine, error };
    }
  }

  // The data methods by name: the node holding the name, searched in node order.

  async createVolume(o: EngineCreateVolumeOptions): Promise<EngineVolume> {
    const sourceNode = o.source ? (await this.holder(o.source.kind, o.source.name)).nodeId : undefined;
    const target = await this.placeVolume({
      name: o.name,
      sizeBytes: o.sizeBytes,
      preferred: [],
      ...(sourceNode ? { sourceNodeId: sourceNode } : {}),
    });
    return target.createVolume(o);
  }

  async getVolume(name: string): Promise<EngineVolume | undefined> {
    return (await this.find("volume", name))?.getVolume(name);
  }

  listVolumes(): Promise<EngineListing<EngineVolume>> {
    return this.concat((e) => e.listVolumes());
  }

  async resizeVolume(name: string, sizeBytes: number): Promise<EngineVolume> {
    return (await this.holder("volume", name)).resizeVolume(name, sizeBytes);
  }

  async setProtection(name: string, policy: string): Promise<EngineVolume> {
    return (await this.holder("volume", name)).setProtection(name, policy);
  }

  async deleteVolume(name: string): Promise<void> {
    await (await this.holder("volume", name)).deleteVolume(name);
  }

  async createSnapshot(o: EngineCreateSnapshotOptions): Promise<EngineSnapshot> {
    return (await this.holder("volume", o.volume)).createSnapshot(o);
  }

  async getSnapshot(name: string): Promise<EngineSnapshot | undefined> {
    return (await this.find("snapshot", name))?.getSnapshot(name);
  }

  listSnapshots(): Promise<EngineListing<EngineSnapshot>> {
    return this.concat((e) => e.listSnapshots());
  }

  /** On the node holding the snapshot (a base snapshot of the same volume is on that node too). */
  async *blockMetadata(request: EngineBlockMetadataRequest): AsyncGenerator<EngineBlockMetadataPage> {
    yield* (await this.holder("snapshot", request.snapshot)).blockMetadata(request);
  }

  async deleteSnapshot(name: string): Promise<void> {
    await (await this.holder("snapshot", name)).deleteSnapshot(name);
  }

  async pinPoint(name: string, pinned: boolean): Promise<EngineSnapshot> {
    return this.engineFor((await this.holder("snapshot", name)).nodeId).pinPoint(name, pinned);
  }

  // Group snapshots and their records belong to nodes: the controller addresses each node's
  // engine (engineFor), as it does for every id. Only a group of one node's volumes has a single
  // node to go to here.

  async createSnapshotGroup(o: EngineCreateSnapshotGroupOptions): Promise<EngineSnapshot[]> {
    const first = o.members[0];
    if (!first) return (await this.holder("volume", "")).createSnapshotGroup(o);
    return (await this.holder("volume", first.volume)).createSnapshotGroup(o);
  }

  holdWrites(): Promise<{ holdId: string }> {
    return Promise.reject(perNode("holdWrites"));
  }

  releaseWrites(): Promise<{ heldThroughout: boolean }> {
    return Promise.reject(perNode("releaseWrites"));
  }

  putGroupRecord(): Promise<void> {
    return Promise.reject(perNode("putGroupRecord"));
  }

  getGroupRecord(): Promise<EngineMeta | undefined> {
    return Promise.reject(perNode("getGroupRecord"));
  }

  deleteGroupRecord(): Promise<void> {
    return Promise.reject(perNode("deleteGroupRecord"));
  }

  async capacity(): Promise<EngineCapacity> {
    const all = await Promise.all(this.nodeEngines().map((e) => e.capacity()));
    return {
      totalBytes: sum(all.map((c) => c.totalBytes)),
      freeBytes: sum(all.map((c) => c.freeBytes)),
      provisionedBytes: sum(all.map((c) => c.provisionedBytes)),
      availableBytes: sum(all.map((c) => c.availableBytes)),
      maxVolumeBytes: Math.max(0, ...all.map((c) => Math.min(c.maxVolumeBytes, c.availableBytes))),
    };
  }

  /**
   * Every node's space together (names are per node: callers that show them ask node by node,
   * through nodeEngines()).
   */
  async space(): Promise<EngineSpace> {
    const all = await Promise.all(this.nodeEngines().map((e) => e.space()));
    const total = (pick: (p: EngineSpace["pool"]) => number): number => sum(all.map((s) => pick(s.pool)));
    const totalBytes = total((p) => p.totalBytes);
    return {
      pool: {
        totalBytes,
        allocatedBytes: total((p) => p.allocatedBytes),
        freeBytes: total((p) => p.freeBytes),
        provisionedBytes: total((p) => p.provisionedBytes),
        // The allowance in bytes, as a ratio of the whole.
        overcommitRatio: totalBytes === 0 ? 1 : total((p) => p.totalBytes * p.overcommitRatio) / totalBytes,
        reclaimableBytes: total((p) => p.reclaimableBytes),
        copyReservedBytes: total((p) => p.copyReservedBytes),
        sharedBytes: total((p) => p.sharedBytes),
        chunkSize: Math.max(0, ...all.map((s) => s.pool.chunkSize)),
      },
      volumes: all.flatMap((s) => s.volumes),
      snapshots: all.flatMap((s) => s.snapshots),
    };
  }

  private async find(kind: "volume" | "snapshot", name: string): Promise<EngineApi | undefined> {
    for (const e of this.nodeEngines()) {
      const found = kind === "volume" ? await e.getVolume(name) : await e.getSnapshot(name);
      if (found) return e;
    }
    return undefined;
  }

  private async holder(kind: "volume" | "snapshot", name: string): Promise<EngineApi> {
    const e = await this.find(kind, name);
    if (!e) throw new SnapblockError("NOT_FOUND", `no node holds a ${kind} named '${name}'`);
    return e;
  }

  private async concat<T extends { id: number }>(
    list: (e: EngineApi) => Promise<EngineListing<T>>,
  ): Promise<EngineListing<T>> {
    const all = await Promise.all(this.nodeEngines().map(list));
    // Ids are per node: callers that page must list node by node (nodeEngines()).
    return { items: all.flatMap((l) => l.items), idWatermark: Math.max(0, ...all.map((l) => l.idWatermark)) };
  }
}

function perNode(method: string): StatusError {
  return new StatusError("UNIMPLEMENTED", `${method} is per node: call it on engineFor(node)`);
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
