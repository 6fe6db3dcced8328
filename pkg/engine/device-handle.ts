import { SnapblockError } from "../errors/index.js";
import type { DataPath } from "./data-path.js";
import type { Device } from "./metadata.js";
import type { PoolCore } from "./pool-core.js";
import type { BlockDevice, DeviceKind, Extent, WriteOptions } from "./types.js";

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

  async read(offset: number, length: number): Promise<Buffer> {
    this.usable();
    return this.io.read(this.device, offset, length);
  }

  async write(offset: number, data: Buffer, options?: WriteOptions): Promise<void> {
    this.usable();
    await this.io.write(this.device, offset, data);
    if (options?.fua) await this.core.commit();
  }

  async flush(): Promise<void> {
    this.usable();
    await this.core.commit();
  }

  async trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    this.usable();
    await this.io.zero(this.device, offset, length);
    if (options?.fua) await this.core.commit();
  }

  async writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void> {
    this.usable();
    await this.io.zero(this.device, offset, length);
    if (options?.fua) await this.core.commit();
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
