/**
 * The contract between the CSI Node service and whatever turns an NBD export into a kernel block
 * device. Two implementations (nbd-client-attacher.ts, nbdfuse-loop-attacher.ts); the CSI code
 * sees only this interface, so NodeStage does not branch on transport (docs/design.md section 5).
 */
import { SnapblockError } from "../errors/index.js";
import { assertSafeAbsolutePath } from "../mount/index.js";

export type AttacherKind = "nbd-client" | "nbdfuse-loop";

export interface AttachOptions {
  /**
   * Names the attachment on this node (state file, FUSE directory); the CSI layer uses the volume
   * id. Letters, digits, `_`, `-` and `.`, up to 128 characters, starting with a letter or digit.
   */
  key: string;
  /** Unix socket of the NBD server serving the export. */
  socketPath: string;
  exportName: string;
  readOnly: boolean;
  /** Size the export is expected to have; attach fails if the device comes up smaller. 0: no check. */
  sizeBytes: number;
}

export type AttachmentHealth = "ok" | "broken";

export interface Attachment {
  key: string;
  kind: AttacherKind;
  /** /dev/nbdN or /dev/loopN. Absent only on a broken attachment whose device is gone. */
  devicePath?: string;
  socketPath: string;
  exportName: string;
  readOnly: boolean;
  /** Current size of the block device in bytes (0 when there is no device). */
  sizeBytes: number;
  /** "broken": the state file says attached but the device, the FUSE mount or nbdfuse is gone. */
  health: AttachmentHealth;
  /** Why it is broken, one sentence each. */
  problems: string[];
  /** ISO time the attachment was made. */
  attachedAt: string;
  /** The nbdfuse process (nbdfuse-loop) or the pid the kernel recorded for the connection (nbd-client). */
  pid?: number;
}

export interface FindOptions {
  /**
   * Also read one block through the whole path (with a timeout), which catches an NBD connection
   * that died while every process and device is still in place. Costs a round trip to the server.
   */
  probeIo?: boolean;
}

export interface BlockAttacher {
  readonly kind: AttacherKind;
  /** Whether refreshSize can make the device see a grown export while it is in use. */
  readonly onlineResize: boolean;
  /**
   * Idempotent: the same key with the same export returns the existing healthy attachment.
   * The same key with a different export is ALREADY_EXISTS. A broken attachment under the key is
   * torn down first (BUSY if its device is still mounted).
   */
  attach(options: AttachOptions): Promise<Attachment>;
  /**
   * Idempotent, and leaves nothing behind: device, FUSE mount, process, state file. BUSY (and no
   * change) while the device is still mounted or held open.
   */
  detach(key: string): Promise<void>;
  /** The attachment recorded under `key`, verified against the system, or undefined. */
  find(key: string, options?: FindOptions): Promise<Attachment | undefined>;
  /** Every attachment recorded in the state directory, verified. */
  list(): Promise<Attachment[]>;
  /** Asks the kernel to re-read the size of the device; returns the device size afterwards. */
  refreshSize(key: string): Promise<number>;
  /**
   * Only where the device can outlive its NBD server (kernel nbd attached with a dead-connection
   * timeout): after a restart of the server (the data plane), gives the device a new connection
   * to its export, which must be served again first. Does not throw for a device that cannot be
   * reconnected: says why, and find() reports the attachment broken from then on.
   */
  reconnect?(key: string, options?: ReconnectOptions): Promise<ReconnectResult>;
}

export interface ReconnectOptions {
  /**
   * How long the server was gone (the previous data plane's last sign of life until now), when
   * known: a device that waited longer than its dead-connection timeout failed I/O meanwhile,
   * so the filesystem on it may have seen errors, and it is reported broken even once reconnected.
   */
  awayMs?: number;
}

export interface ReconnectResult {
  reconnected: boolean;
  /** What was done, or why not (one sentence, with what to do when the device stays broken). */
  message: string;
}

const KEY_SHAPE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function isValidAttachmentKey(key: string): boolean {
  return typeof key === "string" && KEY_SHAPE.test(key);
}

export function assertAttachmentKey(key: string): string {
  if (!isValidAttachmentKey(key)) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `attachment key ${JSON.stringify(key)} must be 1-128 of A-Z a-z 0-9 . _ - starting with a letter or digit`,
    );
  }
  return key;
}

/** NBD export names are UTF-8 strings of at most 4096 bytes (proto.md, NBD_OPT_EXPORT_NAME). */
export function validateAttachOptions(options: AttachOptions): void {
  assertAttachmentKey(options.key);
  assertSafeAbsolutePath(options.socketPath, "NBD socket path");
  if (typeof options.exportName !== "string" || Buffer.byteLength(options.exportName) > 4096) {
    throw new SnapblockError("INVALID_ARGUMENT", "export name must be a string of at most 4096 bytes");
  }
  if (!Number.isSafeInteger(options.sizeBytes) || options.sizeBytes < 0) {
    throw new SnapblockError("INVALID_ARGUMENT", `size ${options.sizeBytes} must be a non-negative integer`);
  }
}
