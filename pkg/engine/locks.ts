/**
 * Concurrency primitives of the data path.
 *
 * ChunkLocks serialize writers of the same logical chunk of the same device: a redirect-on-write
 * reads the old chunk, writes a new one and remaps, and a second writer of that chunk must see the
 * remap. Writers of different chunks never wait for each other.
 *
 * WriteGate lets a snapshot or clone wait until the writes in flight on its source have finished
 * and hold new ones back meanwhile, so a snapshot contains each write entirely or not at all.
 */
export class ChunkLocks {
  private readonly tails = new Map<number, Promise<void>>();

  /** Whether nobody holds or waits for `key`. */
  isFree(key: number): boolean {
    return !this.tails.has(key);
  }

  /** Locks all `keys` (sorted ascending, so two lockers of overlapping sets cannot deadlock). */
  async lockAll(keys: readonly number[]): Promise<() => void> {
    // Fast path: nobody holds any of the keys, so take them all at once without waiting.
    if (keys.every((k) => !this.tails.has(k))) {
      const held = keys.map((key) => {
        let release!: () => void;
        const tail = new Promise<void>((resolve) => (release = resolve));
        this.tails.set(key, tail);
        return { key, tail, release };
      });
      return () => {
        for (const h of held) {
          h.release();
          if (this.tails.get(h.key) === h.tail) this.tails.delete(h.key);
        }
      };
    }
    const releases: (() => void)[] = [];
    for (const key of keys) releases.push(await this.lock(key));
    return () => {
      for (const release of releases) release();
    };
  }

  private async lock(key: number): Promise<() => void> {
    const prev = this.tails.get(key);
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = prev ? prev.then(() => mine) : mine;
    this.tails.set(key, tail);
    if (prev) await prev;
    return () => {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    };
  }
}

export class WriteGate {
  private active = 0;
  private closed: Promise<void> | undefined;
  private idle: (() => void) | undefined;

  /** False while a snapshot or clone holds new writes back. */
  get open(): boolean {
    return this.closed === undefined;
  }

  async enter(): Promise<void> {
    while (this.closed) await this.closed;
    this.active++;
  }

  leave(): void {
    this.active--;
    if (this.active === 0 && this.idle) this.idle();
  }

  /**
   * Closes the gate: waits for the writes in flight to end and holds new ones back until the
   * returned function reopens it (calling it again does nothing).
   */
  async hold(): Promise<() => void> {
    while (this.closed) await this.closed;
    let reopen!: () => void;
    this.closed = new Promise<void>((resolve) => (reopen = resolve));
    if (this.active > 0) await new Promise<void>((resolve) => (this.idle = resolve));
    this.idle = undefined;
    let open = false;
    return () => {
      if (open) return;
      open = true;
      this.closed = undefined;
      reopen();
    };
  }

  /** Waits for writes in flight to end, runs `fn` with new writes held back, then reopens. */
  async exclusive<T>(fn: () => T | Promise<T>): Promise<T> {
    const release = await this.hold();
    try {
      return await fn();
    } finally {
      release();
    }
  }
}
