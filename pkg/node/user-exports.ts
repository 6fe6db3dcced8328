import { promises as fs } from "node:fs";
import { StatusError } from "../errors/index.js";
import type { VolumeDevice } from "../engine-api/index.js";
import type { Logger } from "../log/index.js";
import type { NbdServer } from "../nbd/index.js";
import { socketPathFor } from "./socket-path.js";
import type { VolumeClaims } from "./volume-claims.js";

/** What exports for people need from the pool: handles on volumes and snapshots. */
export interface DeviceOpener {
  openVolumeDevice(engineName: string): VolumeDevice;
  openSnapshotDevice(engineName: string): VolumeDevice;
}

export interface UserExportsOptions {
  devices: DeviceOpener;
  /** The node's NBD server (the same one that serves the node path's exports). */
  nbd: NbdServer;
  /** Directory of the export sockets (created 0700: only the owner of the process reaches them). */
  socketDir: string;
  /** Shared with the node path (NbdNodeVolumes): one user of a volume at a time. */
  claims: VolumeClaims;
  logger: Logger;
}

export type ExportKind = "volume" | "snapshot";

export interface UserExport {
  kind: ExportKind;
  engineName: string;
  /** The NBD export name: "volume/<engine name>" or "snapshot/<engine name>". */
  exportName: string;
  socketPath: string;
  /** NBD URI for nbdinfo, nbdcopy, qemu-img, nbdfuse: nbd+unix:///NAME?socket=PATH. */
  uri: string;
  readOnly: boolean;
}

/**
 * Volumes and snapshots served over NBD for a person's tools (`snapblock volume export`,
 * `snapshot export`), beside the node path's own exports on the same NBD server. A snapshot is
 * always read-only; a volume is read-write unless asked otherwise, and never while it is staged
 * (VolumeClaims). An export lasts until stopped or until the process ends: nothing is recorded,
 * because a restarted process has no client connections to keep.
 */
export class UserExports {
  private readonly served = new Map<string, { info: UserExport; device: VolumeDevice }>();

  constructor(private readonly options: UserExportsOptions) {}

  /**
   * Starts (or returns the running) export. FAILED_PRECONDITION for a volume staged on this node,
   * or already exported with the other access; NOT_FOUND for a name the pool does not have.
   */
  async start(o: {
    kind: ExportKind;
    engineName: string;
    readOnly: boolean;
    label: string;
  }): Promise<UserExport> {
    const readOnly = o.kind === "snapshot" || o.readOnly;
    const exportName = `${o.kind}/${o.engineName}`;
    const running = this.served.get(exportName);
    if (running) {
      if (running.info.readOnly !== readOnly) {
        throw new StatusError(
          "FAILED_PRECONDITION",
          `${o.label} is already exported ${running.info.readOnly ? "read-only" : "read-write"}; stop that export first`,
        );
      }
      return running.info;
    }
    if (o.kind === "volume") this.options.claims.claim(o.engineName, "exported", o.label);
    let device: VolumeDevice | undefined;
    try {
      await fs.mkdir(this.options.socketDir, { recursive: true, mode: 0o700 });
      const socketPath = socketPathFor(this.options.socketDir, `${o.kind}-${o.engineName}`);
      device =
        o.kind === "volume"
          ? this.options.devices.openVolumeDevice(o.engineName)
          : this.options.devices.openSnapshotDevice(o.engineName);
      const started = await this.options.nbd.startExport({
        backend: device,
        listen: { socketPath },
        name: exportName,
        description: `snapblock ${o.kind} ${o.label}`,
        readOnly,
      });
      const info: UserExport = {
        kind: o.kind,
        engineName: o.engineName,
        exportName,
        socketPath,
        uri: started.uri,
        readOnly,
      };
      this.served.set(exportName, { info, device });
      this.options.logger.info("exported for NBD clients", { export: exportName, uri: info.uri, readOnly });
      return info;
    } catch (err) {
      device?.close();
      if (o.kind === "volume") this.options.claims.release(o.engineName, "exported");
      throw err;
    }
  }

  /**
   * Stops an export: connected clients are disconnected after their requests in flight, and the
   * data is flushed. False when there was none.
   */
  async stop(kind: ExportKind, engineName: string): Promise<boolean> {
    const exportName = `${kind}/${engineName}`;
    const running = this.served.get(exportName);
    if (!running) return false;
    try {
      await this.options.nbd.stopExport(exportName);
    } finally {
      running.device.close();
      this.served.delete(exportName);
      if (kind === "volume") this.options.claims.release(engineName, "exported");
    }
    this.options.logger.info("export stopped", { export: exportName });
    return true;
  }

  list(): UserExport[] {
    return [...this.served.values()].map((s) => s.info);
  }

  /** Releases the handles; call after the NBD server has shut down (it flushes them). */
  close(): void {
    for (const { device } of this.served.values()) device.close();
    this.served.clear();
  }
}
