import { SnapblockError, StatusError } from "../errors/index.js";
import type { ChunkFetcher, FetchedChunk } from "../engine/index.js";
import { replicaName, type EngineHolder, type RemoteContent } from "../engine-api/index.js";
import type { Logger } from "../log/index.js";
import type { EngineTransportOptions } from "./engine-tls.js";
import type { WireChunkData, WireReadChunksRequest } from "./engine-messages.js";
import { ChunkChannelClient, ChunkChannelUnsupported } from "./chunk-channel.js";
import { RemoteEngine } from "./remote-engine.js";

/** How long a holder found without the chunk channel is read over gRPC before trying again. */
const WITHOUT_CHANNEL_MS = 10 * 60_000;

export interface HolderContentOptions {
  /** This node's transport (its own node certificate: holders check it and their grants). */
  transport: EngineTransportOptions;
  logger: Logger;
  callTimeoutMs?: number;
  /** Chunks asked for in one ReadChunks stream. */
  batch?: number;
  /**
   * Read chunks over the chunk channel (chunk-channel.ts) where the holder offers it (default
   * true; false: always gRPC's ReadChunks).
   */
  chunkChannel?: boolean;
}

/**
 * RemoteContent over the engine service: a node reading snapshots that other nodes hold, with its
 * own node certificate (the holder lets it only when the controller granted it that snapshot).
 * Holders are tried in the order given; a holder that fails (down, refusing) is skipped for the
 * rest of the chunks, so a pull whose source dies carries on from a replica.
 */
export class HolderContent implements RemoteContent {
  private readonly clients = new Map<string, RemoteEngine>();
  private readonly channels = new Map<string, ChunkChannelClient>();
  /**
   * Holders that answered without the chunk channel (older nodes), and when: gRPC for them for
   * WITHOUT_CHANNEL_MS, then the channel is offered again (the node may have been upgraded).
   */
  private readonly withoutChannel = new Map<string, number>();

  constructor(private readonly o: HolderContentOptions) {}

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
    for (const c of this.channels.values()) c.close();
    this.channels.clear();
  }

  async chunkRuns(request: {
    holders: EngineHolder[];
    chunkSize: number;
    baseOrigin?: string;
  }): Promise<{ runs: [number, number][]; sizeBytes: number; incremental: boolean }> {
    let last: unknown;
    for (const holder of request.holders) {
      try {
        const runs: [number, number][] = [];
        let sizeBytes = 0;
        let incremental = false;
        const baseName = request.baseOrigin ? nameOn(holder, request.baseOrigin) : "";
        for await (const part of this.client(holder).listChunks({
          name: holder.name,
          chunkSize: request.chunkSize,
          baseName,
        })) {
          sizeBytes = part.sizeBytes;
          incremental = part.incremental;
          part.firsts.forEach((first, i) => runs.push([first, part.counts[i] ?? 0]));
        }
        return { runs, sizeBytes, incremental };
      } catch (err) {
        last = err;
        this.o.logger.warn("a holder could not list a snapshot's chunks; trying the next", {
          holder: holder.nodeId,
          name: holder.name,
          err,
        });
      }
    }
    if (last instanceof Error) throw last;
    throw new SnapblockError("NOT_FOUND", "no holder of the snapshot was given");
  }

  fetcher(holders: EngineHolder[], chunkSize: number): ChunkFetcher {
    const batch = this.o.batch ?? 64;
    const read = (holder: EngineHolder, request: WireReadChunksRequest): AsyncGenerator<WireChunkData> =>
      this.readChunks(holder, request);
    let preferred = 0;
    return {
      async *fetch(chunks: number[]): AsyncIterable<FetchedChunk> {
        const remaining = new Set(chunks);
        let last: unknown;
        for (let attempt = 0; attempt < holders.length && remaining.size > 0; attempt++) {
          const index = (preferred + attempt) % holders.length;
          const holder = holders[index]!;
          try {
            const want = [...remaining];
            for (let i = 0; i < want.length; i += batch) {
              for await (const item of read(holder, {
                name: holder.name,
                chunkSize,
                chunks: want.slice(i, i + batch),
              })) {
                if (!remaining.delete(item.chunk)) continue;
                yield { chunk: item.chunk, data: item.hole ? null : item.data };
              }
            }
            preferred = index; // it answers: ask it first next time
          } catch (err) {
            last = err;
          }
        }
        if (remaining.size > 0) {
          throw last instanceof Error
            ? last
            : new SnapblockError("IO", "no holder of the snapshot could send its chunks");
        }
      },
    };
  }

  /** The chunk channel where the holder has it, else gRPC's ReadChunks. */
  private async *readChunks(
    holder: EngineHolder,
    request: WireReadChunksRequest,
  ): AsyncGenerator<WireChunkData> {
    const channel = this.channel(holder);
    if (channel) {
      let yielded = 0;
      try {
        for await (const item of channel.readChunks(request)) {
          yielded++;
          yield item;
        }
        return;
      } catch (err) {
        // Both refusals come before any chunk; anything else is the holder's answer.
        if (yielded > 0 || !this.useGrpcAfter(holder, err)) throw err;
      }
    }
    yield* this.client(holder).readChunks(request);
  }

  /** The holder's chunk channel, unless it is off or the holder was found without one lately. */
  private channel(holder: EngineHolder): ChunkChannelClient | undefined {
    if (!(this.o.chunkChannel ?? true) || !this.o.transport.tls) return undefined;
    const key = keyOf(holder);
    const since = this.withoutChannel.get(key);
    if (since !== undefined) {
      if (performance.now() - since <= WITHOUT_CHANNEL_MS) return undefined;
      this.withoutChannel.delete(key);
    }
    return getOrAdd(
      this.channels,
      key,
      () =>
        new ChunkChannelClient({
          nodeId: holder.nodeId,
          address: holder.address,
          transport: this.o.transport,
          timeoutMs: this.o.callTimeoutMs ?? 60_000,
        }),
    );
  }

  /**
   * Whether a chunk channel failure sends the request to gRPC: the holder's channel is full
   * (RESOURCE_EXHAUSTED: this request), or the holder has none (an older node: for a while).
   */
  private useGrpcAfter(holder: EngineHolder, err: unknown): boolean {
    if (err instanceof StatusError && err.status === "RESOURCE_EXHAUSTED") {
      this.o.logger.debug("a holder's chunk channel is full; this request goes over gRPC", {
        holder: holder.nodeId,
        err: err.message,
      });
      return true;
    }
    if (!(err instanceof ChunkChannelUnsupported)) return false;
    this.withoutChannel.set(keyOf(holder), performance.now());
    this.o.logger.info("a holder has no chunk channel (an older node?); reading its chunks over gRPC", {
      holder: holder.nodeId,
      address: holder.address,
    });
    return true;
  }

  private client(holder: EngineHolder): RemoteEngine {
    return getOrAdd(
      this.clients,
      keyOf(holder),
      () =>
        new RemoteEngine({
          nodeId: holder.nodeId,
          address: holder.address,
          transport: this.o.transport,
          callTimeoutMs: this.o.callTimeoutMs ?? 60_000,
        }),
    );
  }
}

function getOrAdd<V>(map: Map<string, V>, key: string, make: () => V): V {
  let v = map.get(key);
  if (v === undefined) map.set(key, (v = make()));
  return v;
}

/**
 * The engine name snapshot `origin` ("<node>/<name>") has on `holder`: its own name on its own
 * node, the replica name anywhere else.
 */
export function nameOn(holder: EngineHolder, origin: string): string {
  const slash = origin.indexOf("/");
  return origin.slice(0, slash) === holder.nodeId ? origin.slice(slash + 1) : replicaName(origin);
}

function keyOf(holder: EngineHolder): string {
  return `${holder.nodeId}@${holder.address}`;
}
