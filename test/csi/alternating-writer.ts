import { RawNbdClient } from "../nbd/raw-client.js";

/**
 * The writer of the group snapshot tests: numbered writes 1, 2, 3, ... alternating over several
 * volumes (write n goes to volume n % count, at offset 0, the number in its first 8 bytes), each
 * sent through NBD after the previous one was acknowledged, so the write order is the
 * acknowledgement order.
 */
export class AlternatingWriter {
  /** The number of the last write acknowledged, and of the last one sent. */
  acked = 0;
  sent = 0;
  private stopped = false;
  private running: Promise<void> | undefined;

  private constructor(private readonly clients: RawNbdClient[]) {}

  /** Connects to each volume's NBD export (socket path and export name). */
  static async open(exports: { socketPath: string; exportName: string }[]): Promise<AlternatingWriter> {
    const clients: RawNbdClient[] = [];
    for (const e of exports) {
      const { client } = await RawNbdClient.open(e.socketPath, { name: e.exportName, structured: false });
      clients.push(client);
    }
    return new AlternatingWriter(clients);
  }

  start(): void {
    this.running = (async () => {
      while (!this.stopped) {
        const n = ++this.sent;
        const block = Buffer.alloc(4096);
        block.writeBigUInt64LE(BigInt(n), 0);
        const reply = await this.clients[n % this.clients.length]!.writeAt(0, block);
        if (reply.error !== 0) throw new Error(`write ${n} failed with NBD error ${reply.error}`);
        this.acked = n;
      }
    })();
  }

  /** Resolves once at least `n` writes were acknowledged. */
  async reach(n: number): Promise<void> {
    while (this.acked < n) await new Promise((r) => setTimeout(r, 5));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
    for (const c of this.clients) await c.disconnect();
  }
}

/** The number a member holds: the first 8 bytes of its first block. */
export function writeNumber(block: Buffer): number {
  return Number(block.readBigUInt64LE(0));
}

/**
 * The consistency rule of a group snapshot under the alternating writer: the members hold the
 * last writes to their volumes before one instant, so their numbers are consecutive (they differ
 * by at most one in the order written); every write acknowledged before the call is in the group,
 * and nothing sent after the call returned. Returns what is wrong, or undefined.
 */
export function cutProblem(numbers: number[], ackedBefore: number, sentAfter: number): string | undefined {
  const sorted = [...numbers].sort((a, b) => a - b);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]! - sorted[i - 1]! !== 1) return `numbers ${sorted.join(", ")} are not consecutive`;
  }
  const top = sorted[sorted.length - 1]!;
  if (top < ackedBefore)
    return `the newest write in the group is ${top}, but ${ackedBefore} was acknowledged before`;
  if (top > sentAfter) return `the group holds write ${top}, sent after the call returned (${sentAfter})`;
  return undefined;
}
