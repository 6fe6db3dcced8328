/**
 * What the NBD server needs from a block device. The engine's `BlockDevice` (pkg/engine/types.ts)
 * satisfies this structurally; pkg/nbd never imports the engine (docs/design.md section 5).
 */

/** One contiguous run of the address space with the same allocation state. */
export interface NbdBackendExtent {
  offset: number;
  length: number;
  /** false: a hole, which reads as zeroes. */
  allocated: boolean;
}

export interface NbdWriteOptions {
  /** Force unit access: the change is durable when the promise resolves (NBD_CMD_FLAG_FUA). */
  fua?: boolean;
}

export interface NbdBackend {
  readonly name: string;
  readonly readOnly: boolean;
  /** Current size in bytes. Read per request: a volume can grow while it is exported. */
  readonly size: number;
  /** Unit of allocation; advertised as the preferred block size and used to judge fast zeroing. */
  readonly chunkSize: number;
  /**
   * `into`, when given (at least `length` bytes), may be filled and returned (or a subarray of
   * it) instead of a new buffer; the backend must not touch it once the promise settled, also
   * when it rejects: the server reuses it.
   */
  read(offset: number, length: number, into?: Buffer): Promise<Buffer>;
  /**
   * `data` is read only until the promise settles and no reference to it is kept: the server
   * reuses the buffer for a later request's payload as soon as it does.
   */
  write(offset: number, data: Buffer, options?: NbdWriteOptions): Promise<void>;
  /** Makes every write completed before the call durable, whichever connection issued it. */
  flush(): Promise<void>;
  trim(offset: number, length: number, options?: NbdWriteOptions): Promise<void>;
  writeZeroes(offset: number, length: number, options?: NbdWriteOptions): Promise<void>;
  /** Allocation map of a range, answered from metadata alone (synchronous by contract). */
  extents(offset: number, length: number): NbdBackendExtent[];
}
