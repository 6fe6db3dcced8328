import { SnapblockError } from "../errors/index.js";
import type { DataPath } from "./data-path.js";
import type { Device } from "./metadata.js";
import type { PoolCore } from "./pool-core.js";
import type { BlockDevice, DataOp, DeviceKind, Extent, WriteOptions } from "./types.js";

/** An open volume or snapshot: the BlockDevice the NBD server and the node plugin use. */
export class DeviceHandle implements BlockDevice {
  private open = true;

  constructor(
    private readonly device: Device,
    private readonly io: DataPath,
    private readonly core: PoolCore,
    private readonly onClose: () => void,
  ) {}

  get name(): string {
    return this.device.name;
  }

  get kind(): DeviceKind {
    return this.device.kind;
  }

  get readOnly(): boolean {
    return this.device.kind !== "volume";
  }

  get size(): number {
    return this.device.sizeBytes;
  }

  get chunkSize(): number {
    return this.core.chunkSize;
  }

  private usable(): void {
    if (!this.open)
      throw new SnapblockError("CLOSED", `handle on ${this.device.kind} '${this.device.name}' is closed`);
  }

  /** Runs a data operation, reporting it to the observer. */
  private async observed<T>(op: DataOp, bytes: number, run: () => Promise<T>): Promise<T> {
    this.usable();
    const hook = this.core.observer.ioCompleted;
    if (!hook) return run();
    const started = performance.now();
    try {
      const result = await run();
      hook({
        device: this.device.name,
        kind: this.device.kind,
        op,
        bytes,
        seconds: (performance.now() - started) / 1000,
      });
      return result;
    } catch (err) {
      const error = err instanceof SnapblockError ? err.code : "INTERNAL";
      hook({
        device: this.device.name,
        kind: this.device.kind,
        op,
        bytes,
        seconds: (performance.now() - started) / 1000,
        error,
      });
      throw err;
    }
  }

  read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    return this.observed("read", length, () => this.io.read(this.device, offset, length, into));
  }

  write(offset: number, data: Buffer, options?: WriteOptions): Promise<void> {
    return this.observed("write", data.length, async () => {
      await this.io.write(this.device, offset, data);
      if (options?.fua) await this.core.commit();
    });
  }

  flush(): Promise<void> {
    return this.observed("flush", 0, () => this.core.commit());
  }

  trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    return this.observed("trim", length, async () => {
      await this.io.zero(this.device, offset, length);
      if (options?.fua) await this.core.commit();
    });
  }

  writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void> {
    return this.observed("zero", length, async () => {
      await this.io.zero(this.device, offset, length);
      if (options?.fua) await this.core.commit();
    });
  }

  extents(offset: number, length: number): Extent[] {
    this.usable();
    return this.io.extents(this.device, offset, length);
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    this.onClose();
  }
}
