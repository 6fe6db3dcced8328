/**
 * A small seeded pseudo-random generator (mulberry32). Tests, the fault-injecting storage and the
 * benchmarks need reproducible randomness: a failing seed must replay the same run.
 */
export class Prng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0 || 0x9e3779b9;
  }

  /** Uniform in [0, 2^32). */
  nextU32(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextU32() / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error("pick from an empty list");
    return items[this.int(items.length)]!;
  }

  /** Fills a buffer with bytes derived from `seed` alone: the same seed gives the same bytes. */
  static fill(buffer: Buffer, seed: number): Buffer {
    const g = new Prng(seed);
    let i = 0;
    for (; i + 4 <= buffer.length; i += 4) buffer.writeUInt32LE(g.nextU32(), i);
    for (; i < buffer.length; i++) buffer[i] = g.nextU32() & 0xff;
    return buffer;
  }
}
