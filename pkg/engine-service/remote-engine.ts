import { type Client, type ServiceError, Metadata } from "@grpc/grpc-js";
import {
  fromWireSnapshot,
  fromWireSpace,
  toWireLimits,
  fromWireVolume,
  toWireHolder,
  toWireKind,
  type WireBlockMetadataPage,
  type WireChunkData,
  type WireListBlockMetadataRequest,
  type WireChunkRuns,
  type WireListChunksRequest,
  type WireTombstones,
  type WireReadChunksRequest,
  type WireReplicateSnapshotRequest,
  type WireCapacity,
  type WireCreateSnapshotRequest,
  type WireCreateSnapshotGroupResponse,
  type WireGetGroupRecordResponse,
  type WireCreateVolumeRequest,
  type WireGetSnapshotResponse,
  type WireGetVolumeResponse,
  type WireListSnapshotsResponse,
  type WireListVolumesResponse,
  type WireNodeInfo,
  type WireSnapshot,
  type WireSnapshotChunk,
  type WireSpace,
  type WireVolume,
} from "./engine-messages.js";
import { loadEngineProto } from "./engine-proto.js";
import { addressedTo } from "./call-addressee.js";
import { fromEngineStatus } from "./engine-status.js";
import { channelCredentials, channelOptions, type EngineTransportOptions } from "./engine-tls.js";
import { StatusError } from "../errors/index.js";
import type {
  EngineApi,
  EngineBlockMetadataPage,
  EngineBlockMetadataRequest,
  EngineCapacity,
  EngineCreateSnapshotOptions,
  EngineCreateSnapshotGroupOptions,
  EngineMeta,
  EngineCreateVolumeOptions,
  EngineHolder,
  EngineListing,
  EnginePlacementRequest,
  EnginePointPins,
  EngineReplicateOptions,
  EngineReplication,
  EngineSnapshot,
  EngineSpace,
  EngineTombstone,
  EngineVolume,
} from "../engine-api/index.js";

export interface RemoteEngineOptions {
  /** The node whose engine service this is (part of every id, and of every error message). */
  nodeId: string;
  /** "host:port" of the node's engine service. */
  address: string;
  transport: EngineTransportOptions;
  /**
   * Deadline of one call (default 60 s). Restores and clones return at once (a full copy runs in
   * the background), so no engine call legitimately takes long.
   */
  callTimeoutMs?: number;
}

type Callback<Res> = (err: ServiceError | null, res?: Res) => void;
type UnaryMethod = (req: unknown, md: Metadata, opts: { deadline: Date }, cb: Callback<unknown>) => unknown;

/**
 * The gRPC client implementation of EngineApi (cluster mode): the controller holds one per node
 * and cannot tell it from a LocalEngine. Failures come back as the same SnapblockErrors the engine
 * raised (engine-status.ts); a node that cannot be reached is CLOSED (UNAVAILABLE) with its name.
 */
/** What a holder may send ahead of this node's reads, on one connection. */
const RECEIVE_WINDOW_BYTES = 16 * 1024 * 1024;

export class RemoteEngine implements EngineApi, EngineReplication, EnginePointPins {
  readonly nodeId: string;
  readonly address: string;
  private readonly client: Client;
  private readonly timeoutMs: number;
  /** The outcome of the last call: Probe-style readiness without a round trip. */
  private reachable = true;

  constructor(options: RemoteEngineOptions) {
    this.nodeId = options.nodeId;
    this.address = options.address;
    this.timeoutMs = options.callTimeoutMs ?? 60_000;
    // The server's certificate must name this node: an announcement pointing node A's id at
    // node B's address is refused in the handshake.
    const creds = channelCredentials(options.transport, options.address, options.nodeId);
    const { Client: EngineClient } = loadEngineProto();
    this.client = new EngineClient(options.address, creds, {
      ...channelOptions(options.transport),
      "grpc.max_receive_message_length": 4 * 1024 * 1024,
      // HTTP/2 flow control: this side receives the chunk streams (pulls, on-demand fetches).
      // With the protocol's default 64 KiB window, one 64 KiB chunk is in flight per round trip
      // on the whole connection; a larger window lets the holder stream ahead.
      "grpc-node.flow_control_window": RECEIVE_WINDOW_BYTES,
      // A restarted node plugin must be found again quickly, not after minutes of backoff.
      "grpc.initial_reconnect_backoff_ms": 200,
      "grpc.max_reconnect_backoff_ms": 2000,
    });
  }

  isReady(): boolean {
    return this.reachable;
  }

  close(): void {
    this.client.close();
  }

  async createVolume(o: EngineCreateVolumeOptions): Promise<EngineVolume> {
    const req: WireCreateVolumeRequest = {
      name: o.name,
      sizeBytes: o.sizeBytes,
      meta: { ...o.meta },
      source: o.source
        ? {
            kind: toWireKind(o.source.kind),
            name: o.source.name,
            nodeId: o.source.nodeId ?? "",
            holders: (o.source.holders ?? []).map(toWireHolder),
          }
        : null,
      fullCopy: o.fullCopy ?? false,
      protection: o.protection ?? "",
    };
    return fromWireVolume(await this.call<WireVolume>("CreateVolume", req));
  }

  async getVolume(name: string): Promise<EngineVolume | undefined> {
    const res = await this.call<WireGetVolumeResponse>("GetVolume", { name });
    return res.found && res.volume ? fromWireVolume(res.volume) : undefined;
  }

  async listVolumes(): Promise<EngineListing<EngineVolume>> {
    const res = await this.call<WireListVolumesResponse>("ListVolumes", {});
    return { items: res.volumes.map(fromWireVolume), idWatermark: res.idWatermark };
  }

  async resizeVolume(name: string, sizeBytes: number): Promise<EngineVolume> {
    return fromWireVolume(await this.call<WireVolume>("ResizeVolume", { name, sizeBytes }));
  }

  async setProtection(name: string, policy: string): Promise<EngineVolume> {
    return fromWireVolume(await this.call<WireVolume>("SetProtection", { name, policy }));
  }

  async deleteVolume(name: string): Promise<void> {
    await this.call("DeleteVolume", { name });
  }

  async createSnapshot(o: EngineCreateSnapshotOptions): Promise<EngineSnapshot> {
    const req: WireCreateSnapshotRequest = {
      volume: o.volume,
      name: o.name,
      meta: { ...o.meta },
      skipFilesystemFreeze: o.freezeFilesystem === false,
      limits: toWireLimits(o.limits),
    };
    return fromWireSnapshot(await this.call<WireSnapshot>("CreateSnapshot", req));
  }

  async getSnapshot(name: string): Promise<EngineSnapshot | undefined> {
    const res = await this.call<WireGetSnapshotResponse>("GetSnapshot", { name });
    return res.found && res.snapshot ? fromWireSnapshot(res.snapshot) : undefined;
  }

  async listSnapshots(): Promise<EngineListing<EngineSnapshot>> {
    const res = await this.call<WireListSnapshotsResponse>("ListSnapshots", {});
    return { items: res.snapshots.map(fromWireSnapshot), idWatermark: res.idWatermark };
  }

  async deleteSnapshot(name: string): Promise<void> {
    await this.call("DeleteSnapshot", { name });
  }

  async pinPoint(name: string, pinned: boolean): Promise<EngineSnapshot> {
    return fromWireSnapshot(await this.call<WireSnapshot>("PinPoint", { name, pinned }));
  }

  /** Pages arrive as they are read: grpc-js asks the server for more only as this is consumed. */
  async *blockMetadata(r: EngineBlockMetadataRequest): AsyncGenerator<EngineBlockMetadataPage> {
    const req: WireListBlockMetadataRequest = {
      name: r.snapshot,
      baseName: r.baseSnapshot ?? "",
      startingOffset: r.startingOffset,
      maxResults: r.maxResults,
    };
    for await (const page of this.stream<WireBlockMetadataPage>("ListBlockMetadata", req)) {
      yield {
        sizeBytes: page.sizeBytes,
        ranges: page.ranges.map((x) => ({ offset: x.offset, length: x.length })),
      };
    }
  }

  async createSnapshotGroup(o: EngineCreateSnapshotGroupOptions): Promise<EngineSnapshot[]> {
    const res = await this.call<WireCreateSnapshotGroupResponse>("CreateSnapshotGroup", {
      members: o.members.map((m) => ({ volume: m.volume, name: m.name, meta: { ...m.meta } })),
      holdId: o.holdId ?? "",
    });
    return res.snapshots.map(fromWireSnapshot);
  }

  holdWrites(o: { volumes: string[]; timeoutMs: number }): Promise<{ holdId: string }> {
    // The hold is bounded on the node; the call need not wait much longer than that.
    return this.call<{ holdId: string }>("HoldWrites", o, o.timeoutMs + 5000);
  }

  releaseWrites(holdId: string): Promise<{ heldThroughout: boolean }> {
    return this.call<{ heldThroughout: boolean }>("ReleaseWrites", { holdId });
  }

  async putGroupRecord(name: string, record: EngineMeta): Promise<void> {
    await this.call("PutGroupRecord", { name, record: { ...record } });
  }

  async getGroupRecord(name: string): Promise<EngineMeta | undefined> {
    const res = await this.call<WireGetGroupRecordResponse>("GetGroupRecord", { name });
    return res.found ? { ...res.record } : undefined;
  }

  async deleteGroupRecord(name: string): Promise<void> {
    await this.call("DeleteGroupRecord", { name });
  }

  async capacity(): Promise<EngineCapacity> {
    // proto3 sends no empty list: absent arrives as [], which the engine means as "none" (absent).
    const { pointsDroppedForSpace, ...c } = await this.call<WireCapacity>("GetCapacity", {});
    return pointsDroppedForSpace?.length ? { ...c, pointsDroppedForSpace } : c;
  }

  async space(): Promise<EngineSpace> {
    return fromWireSpace(await this.call<WireSpace>("GetSpace", {}));
  }

  engineFor(nodeId: string): EngineApi | undefined {
    return nodeId === this.nodeId ? this : undefined;
  }

  nodeEngines(): EngineApi[] {
    return [this];
  }

  /** Alone, a node engine places on itself; ClusterEngine chooses among many. */
  placeVolume(request: EnginePlacementRequest): Promise<EngineApi> {
    if (request.requisite && !request.requisite.includes(this.nodeId)) {
      return Promise.reject(
        new StatusError(
          "RESOURCE_EXHAUSTED",
          `accessibility_requirements do not include node ${this.nodeId}`,
        ),
      );
    }
    return Promise.resolve(this);
  }

  nodeInfo(): Promise<WireNodeInfo> {
    return this.call<WireNodeInfo>("GetNodeInfo", {});
  }

  async replicateSnapshot(o: EngineReplicateOptions): Promise<EngineSnapshot> {
    const req: WireReplicateSnapshotRequest = {
      origin: o.origin,
      sizeBytes: o.sizeBytes,
      holders: o.holders.map(toWireHolder),
      baseOrigin: o.baseOrigin ?? "",
      meta: { ...o.meta },
    };
    return fromWireSnapshot(await this.call<WireSnapshot>("ReplicateSnapshot", req));
  }

  async setHolders(origin: string, holders: EngineHolder[]): Promise<void> {
    await this.call("SetHolders", { origin, holders: holders.map(toWireHolder) });
  }

  async grantPull(name: string, nodeId: string): Promise<void> {
    await this.call("GrantPull", { name, nodeId });
  }

  async addTombstones(tombstones: EngineTombstone[]): Promise<void> {
    await this.call("AddTombstones", { tombstones });
  }

  async listTombstones(): Promise<EngineTombstone[]> {
    return (await this.call<WireTombstones>("ListTombstones", {})).tombstones.map((t) => ({ ...t }));
  }

  /** Node to node: the chunks to fetch of snapshot `name` on this node (see proto ListChunks). */
  listChunks(request: WireListChunksRequest): AsyncGenerator<WireChunkRuns> {
    return this.stream<WireChunkRuns>("ListChunks", request);
  }

  /** Node to node: the content of chunks of snapshot `name` on this node. */
  readChunks(request: WireReadChunksRequest): AsyncGenerator<WireChunkData> {
    return this.stream<WireChunkData>("ReadChunks", request);
  }

  private async *stream<T>(method: string, request: object): AsyncGenerator<T> {
    const fn = this.method(method) as (req: unknown, md: Metadata) => AsyncIterable<T>;
    try {
      for await (const item of fn.call(this.client, request, addressedTo(this.nodeId))) yield item;
      this.reachable = true;
    } catch (err) {
      const mapped = fromEngineStatus(err as ServiceError, this);
      this.reachable =
        mapped.code !== "CLOSED" || (err as ServiceError).metadata?.get("snapblock-error-code").length > 0;
      throw mapped;
    }
  }

  /** The allocated ranges of a snapshot on this node (for cross-node copies). */
  async *readSnapshotChunks(name: string, maxMessageBytes = 0): AsyncGenerator<WireSnapshotChunk> {
    const method = this.method("ReadSnapshotChunks") as (
      req: unknown,
      md: Metadata,
    ) => AsyncIterable<WireSnapshotChunk>;
    try {
      for await (const chunk of method.call(this.client, { name, maxMessageBytes }, addressedTo(this.nodeId)))
        yield chunk;
    } catch (err) {
      throw fromEngineStatus(err as ServiceError, this);
    }
  }

  /** grpc-js makes the service's methods properties of the client object at runtime. */
  private method(name: string): unknown {
    return (this.client as unknown as Record<string, unknown>)[name];
  }

  private call<Res>(method: string, req: object, timeoutMs = this.timeoutMs): Promise<Res> {
    const fn = this.method(method) as UnaryMethod;
    const deadline = new Date(Date.now() + Math.min(timeoutMs, this.timeoutMs));
    return new Promise<Res>((resolve, reject) => {
      fn.call(this.client, req, addressedTo(this.nodeId), { deadline }, (err, res) => {
        if (err) {
          const mapped = fromEngineStatus(err, this);
          // Only a transport failure says the node is gone; an engine error proves it answers.
          this.reachable = mapped.code !== "CLOSED" || err.metadata.get("snapblock-error-code").length > 0;
          reject(mapped);
        } else {
          this.reachable = true;
          resolve(res as Res);
        }
      });
    });
  }
}
