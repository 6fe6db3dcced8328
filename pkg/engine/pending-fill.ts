import { SnapblockError, asSnapblockError } from "../errors/index.js";
import type { Device } from "./metadata.js";
import type { PoolCore } from "./pool-core.js";
import { RecordType } from "./records.js";

/** One chunk's content as its source has it: null for a hole (it reads as zeroes). */
export interface FetchedChunk {
  chunk: number;
  data: Buffer | null;
}

/**
 * Where the content of pending chunks comes from (the upper layer: another node's engine
 * service). fetch() yields the asked chunks in any order, each once; a chunk it cannot get is an
 * error (never zeroes in its place). Data is chunkSize bytes (the last chunk of a device may be
 * shorter; it is padded with zeroes).
 */
export interface ChunkFetcher {
  fetch(chunks: number[]): AsyncIterable<FetchedChunk>;
}

export interface PullOptions {
  /** Background pull bandwidth limit in bytes per second (0 or absent: none). */
  bytesPerSecond?: number;
}

export type PullState = "running" | "stalled" | "done" | "stopped";

export interface PullProgress {
  source: string;
  state: PullState;
  /** Chunks still pending in some device of this source. */
  pendingChunks: number;
  /** Chunks this process has filled (on demand or in the background) since it started. */
  filledChunks: number;
  /** Bytes received since this process started pulling. */
  bytes: number;
  /** Bytes per second over the last few seconds. */
  rate: number;
  /** Why the pull is stalled (the source cannot be reached, say). */
  error?: string;
}

/** Chunks asked for in one fetch by the background pull (bounded memory: a batch in flight). */
const BATCH = 64;
/** Background fills between commits (progress becomes durable at least this often). */
const COMMIT_EVERY = 256;
/**
 * Batches a background pull keeps in flight: while one batch's chunks are written here, the next
 * ones are read and sent by the holder (one batch at a time left both sides idle half the time;
 * bench:cluster). Memory stays bounded: each batch is one stream under gRPC flow control.
 */
const PULL_STREAMS = 4;

/**
 * Fills pending chunks: on demand (a read or a partial write needs one) and in the background
 * (one pull per source). A fill writes the chunk's content to a new chunk and maps it, with one
 * FILL record, into every device of that source for which the chunk is still pending; a hole is
 * one FILL_HOLE record. Fills of one chunk are deduplicated. What was filled is durable with the
 * next commit; after a crash the rest is pending again and is fetched again.
 */
export class PendingFiller {
  private readonly fetchers = new Map<string, { fetcher: ChunkFetcher; options: PullOptions }>();
  private readonly inflight = new Map<string, Promise<void>>();
  private readonly pulls = new Map<string, Pull>();

  constructor(private readonly core: PoolCore) {}

  /** Routes a source's chunks to `fetcher` (replacing an earlier one) and (re)starts its pull. */
  setFetcher(source: string, fetcher: ChunkFetcher, options: PullOptions = {}): void {
    this.fetchers.set(source, { fetcher, options });
    const pull = this.pulls.get(source);
    if (pull && pull.state !== "done" && pull.state !== "stopped") pull.wake();
    else this.startPull(source);
  }

  /** Sources with pending chunks and no fetcher yet (the upper layer resolves them after open). */
  sourcesWithoutFetcher(): string[] {
    return [...this.core.meta.pendingBySource.keys()].filter((s) => !this.fetchers.has(s));
  }

  progress(source: string): PullProgress | undefined {
    const pull = this.pulls.get(source);
    const pendingChunks = this.pendingCount(source);
    if (!pull) {
      if (pendingChunks === 0) return undefined;
      return {
        source,
        state: "stalled",
        pendingChunks,
        filledChunks: 0,
        bytes: 0,
        rate: 0,
        error: "no route to the source yet",
      };
    }
    return { ...pull.progress(), pendingChunks };
  }

  /** Stops every pull (pool closing); resolves when they have stopped. */
  async stop(): Promise<void> {
    const pulls = [...this.pulls.values()];
    for (const p of pulls) p.stop();
    await Promise.all(pulls.map((p) => p.done));
    await Promise.allSettled([...this.inflight.values()]);
  }

  /** Makes sure these pending chunks of `device` are filled (a read or partial write needs them). */
  async ensure(device: Device, chunks: number[]): Promise<void> {
    const pending = device.pending;
    if (!pending) return;
    const missing = chunks.filter((c) => pending.has(c));
    if (missing.length === 0) return;
    await this.fill(pending.source, missing, true);
  }

  private pendingCount(source: string): number {
    // The union over the source's devices; each device's pending set is a subset of the first's
    // or was written over, so the largest is a close, cheap answer.
    let n = 0;
    for (const d of this.core.meta.pendingBySource.get(source) ?? []) n = Math.max(n, d.pending?.count ?? 0);
    return n;
  }

  private startPull(source: string): void {
    if (!this.core.meta.pendingBySource.has(source)) return;
    const pull = new Pull(source, this);
    this.pulls.set(source, pull);
  }

  /** Called by a pull: the next chunks to ask for, at or after `from` (wrapping to 0). */
  nextChunks(source: string, from: number): number[] {
    const devices = [...(this.core.meta.pendingBySource.get(source) ?? [])];
    const pick = (lo: number): number[] => {
      const set = new Set<number>();
      for (const d of devices) {
        if (!d.pending) continue;
        let taken = 0;
        for (const c of d.pending.chunksIn(lo, d.pending.bits.length * 8)) {
          if (!this.inflight.has(key(source, c))) set.add(c);
          if (++taken >= BATCH) break;
        }
      }
      return [...set].sort((a, b) => a - b).slice(0, BATCH);
    };
    const ahead = pick(from);
    return ahead.length > 0 ? ahead : pick(0);
  }

  hasPending(source: string): boolean {
    return this.core.meta.pendingBySource.has(source);
  }

  fetcherOf(source: string): { fetcher: ChunkFetcher; options: PullOptions } | undefined {
    return this.fetchers.get(source);
  }

  /**
   * Fetches and fills `chunks` of `source` (those not already being filled; waits for those).
   * `foreground`: a reader waits for it, so its errors are the reader's.
   */
  async fill(
    source: string,
    chunks: number[],
    foreground: boolean,
    onChunk?: (bytes: number) => void | Promise<void>,
  ): Promise<void> {
    const waits: Promise<void>[] = [];
    const mine: number[] = [];
    for (const c of chunks) {
      const running = this.inflight.get(key(source, c));
      if (running) waits.push(running);
      else mine.push(c);
    }
    if (mine.length > 0) {
      const route = this.fetchers.get(source);
      if (!route) {
        throw new SnapblockError(
          "IO",
          `the content of ${mine.length} chunk(s) is still on ${source}, and no way to reach it is known yet`,
        );
      }
      const run = this.fetchAndFill(source, route.fetcher, mine, foreground, onChunk);
      const settled = run.then(
        () => undefined,
        () => undefined,
      );
      for (const c of mine) this.inflight.set(key(source, c), settled);
      void settled.then(() => {
        for (const c of mine)
          if (this.inflight.get(key(source, c)) === settled) this.inflight.delete(key(source, c));
      });
      waits.push(run);
    }
    await Promise.all(waits);
    // A chunk another fill was fetching may have failed there: still pending means not filled.
    const left = chunks.filter((c) => this.core.meta.pendingAt(source, c).length > 0);
    if (left.length > 0 && foreground) {
      throw new SnapblockError("IO", `chunk ${left[0]} is still on ${source}: its fetch failed`);
    }
  }

  private async fetchAndFill(
    source: string,
    fetcher: ChunkFetcher,
    chunks: number[],
    onDemand: boolean,
    onChunk?: (bytes: number) => void | Promise<void>,
  ): Promise<void> {
    const wanted = new Set(chunks);
    try {
      for await (const { chunk, data } of fetcher.fetch(chunks)) {
        if (!wanted.delete(chunk)) continue; // not asked for, or twice: ignore
        await this.fillOne(source, chunk, data);
        this.core.observer.chunkFilled?.({ source, bytes: data?.length ?? 0, onDemand });
        // The background pull's rate limit waits here, which holds the stream back too.
        await onChunk?.(data?.length ?? 0);
      }
    } catch (err) {
      throw asSnapblockError(err, `fetching ${chunks.length} chunk(s) from ${source}`);
    }
    if (wanted.size > 0) {
      throw new SnapblockError("IO", `${source} did not send chunk ${[...wanted][0]} it was asked for`);
    }
  }

  /** Writes one chunk's content and maps it into every device still waiting for it. */
  private async fillOne(source: string, chunk: number, data: Buffer | null): Promise<void> {
    const { core } = this;
    core.ensureUsable();
    if (core.meta.pendingAt(source, chunk).length === 0) return; // written over meanwhile
    if (data === null || isZero(data)) {
      const ids = core.meta.pendingAt(source, chunk).map((d) => d.id);
      if (ids.length > 0) core.record({ type: RecordType.FillHole, id: chunk, ids });
      return;
    }
    const cs = core.chunkSize;
    const content = data.length === cs ? data : padTo(data, cs);
    core.space.reclaim(core.committedSeq);
    const [target] = core.space.reserve(1);
    const io = core.space.beginIo();
    try {
      await core.data.write([content], target! * cs);
    } catch (err) {
      core.space.unreserve(target!);
      throw asSnapblockError(err, `writing a fetched chunk from ${source}`);
    } finally {
      core.space.endIo(io);
    }
    // Synchronously from here: whoever still waits for the chunk gets it in one record.
    const ids = core.meta.pendingAt(source, chunk).map((d) => d.id);
    if (ids.length === 0) {
      core.space.unreserve(target!);
      return;
    }
    core.record({ type: RecordType.Fill, id: target!, chunk, ids });
  }

  commitEvery(): number {
    return COMMIT_EVERY;
  }

  get poolCore(): PoolCore {
    return this.core;
  }
}

function key(source: string, chunk: number): string {
  return `${chunk}@${source}`;
}

function isZero(buf: Buffer): boolean {
  for (let i = 0; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

function padTo(data: Buffer, size: number): Buffer {
  if (data.length > size)
    throw new SnapblockError("IO", `a fetched chunk has ${data.length} bytes, more than ${size}`);
  const out = Buffer.alloc(size);
  data.copy(out);
  return out;
}

/** The background pull of one source: batches of pending chunks until none is left. */
class Pull {
  state: PullState = "running";
  readonly done: Promise<void>;
  private filled = 0;
  private bytes = 0;
  private error: string | undefined;
  private stopped = false;
  private readonly sleepers = new Set<() => void>();
  private cursor = 0;
  private sinceCommit = 0;
  private windowStart = performance.now();
  private windowBytes = 0;
  private readonly samples: { at: number; bytes: number }[] = [];
  private readonly startedAt = performance.now();

  constructor(
    private readonly source: string,
    private readonly filler: PendingFiller,
  ) {
    this.done = this.run();
  }

  stop(): void {
    this.stopped = true;
    this.wake();
  }

  wake(): void {
    for (const wake of [...this.sleepers]) wake();
  }

  progress(): Omit<PullProgress, "pendingChunks"> {
    const now = performance.now();
    const recent = this.samples.filter((s) => now - s.at < 5000);
    const span = recent.length > 1 ? (now - recent[0]!.at) / 1000 : 0;
    const rate = span > 0 ? recent.slice(1).reduce((n, s) => n + s.bytes, 0) / span : 0;
    return {
      source: this.source,
      state: this.state,
      filledChunks: this.filled,
      bytes: this.bytes,
      rate: Math.round(rate),
      ...(this.error ? { error: this.error } : {}),
    };
  }

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.sleepers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.sleepers.add(done);
    });
  }

  /** One of the pull's streams: batch after batch until nothing is left or the pull stops. */
  private async stream(): Promise<void> {
    const core = this.filler.poolCore;
    let backoff = 250;
    while (!this.stopped && this.filler.hasPending(this.source)) {
      const route = this.filler.fetcherOf(this.source);
      const chunks = this.filler.nextChunks(this.source, this.cursor);
      if (!route || chunks.length === 0) {
        // No route, or everything left is being filled (on demand, or by another stream).
        this.state = route ? "running" : "stalled";
        if (!route) this.error = "no route to the source yet";
        await this.sleep(50);
        continue;
      }
      this.cursor = chunks[chunks.length - 1]! + 1;
      try {
        const limit = route.options.bytesPerSecond ?? 0;
        await this.filler.fill(this.source, chunks, false, async (bytes) => {
          this.filled++;
          this.bytes += bytes;
          this.windowBytes += bytes;
          this.samples.push({ at: performance.now(), bytes });
          if (this.samples.length > 4096) this.samples.splice(0, 2048);
          if (limit > 0) {
            const elapsed = (performance.now() - this.windowStart) / 1000;
            const ahead = this.windowBytes / limit - elapsed;
            if (ahead > 0) await this.sleep(ahead * 1000);
            if (elapsed > 5) {
              this.windowStart = performance.now();
              this.windowBytes = 0;
            }
          }
        });
        this.state = "running";
        this.error = undefined;
        backoff = 250;
        this.sinceCommit += chunks.length;
        if (this.sinceCommit >= this.filler.commitEvery()) {
          this.sinceCommit = 0;
          await core.commit();
        }
      } catch (err) {
        if (this.stopped) break;
        this.state = "stalled";
        this.error = (err as Error).message;
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, 10_000);
      }
    }
  }

  private async run(): Promise<void> {
    await Promise.resolve();
    const core = this.filler.poolCore;
    // Several batches in flight; nextChunks never hands out a chunk that is being filled, so the
    // streams take different chunks.
    await Promise.all(Array.from({ length: PULL_STREAMS }, () => this.stream()));
    if (!this.stopped) {
      // A failed commit is the pool's failure (writers see it); what was filled stays pending
      // and is fetched again after a restart.
      await core.commit().catch((err: unknown) => {
        this.error = (err as Error).message;
      });
    }
    this.state = this.stopped && this.filler.hasPending(this.source) ? "stopped" : "done";
    if (this.state === "done") {
      core.observer.pullFinished?.({
        source: this.source,
        chunks: this.filled,
        bytes: this.bytes,
        seconds: (performance.now() - this.startedAt) / 1000,
      });
    }
  }
}
