import { StatusError } from "../errors/index.js";

/** Who uses a volume's data on this node: the block path (staged) or an NBD export for a person. */
export type VolumeUser = "staged" | "exported";

/**
 * One user of a volume's data at a time on this node. The engine hands out as many read-write
 * handles as asked (pkg/engine), so nothing below would stop a kernel filesystem on the staged
 * device and an NBD client of `snapblock volume export` from writing the same blocks: each would
 * corrupt what the other believes is there. NodeStage and StartExport claim the volume here first.
 * In memory only: exports end with the process, and staged volumes are claimed again when the
 * node path re-exports them after a restart.
 */
export class VolumeClaims {
  private readonly users = new Map<string, VolumeUser>();

  /** Idempotent for the same user; FAILED_PRECONDITION (with what to do) while the other holds it. */
  claim(engineName: string, user: VolumeUser, volume: string): void {
    const holder = this.users.get(engineName);
    if (holder !== undefined && holder !== user) {
      throw new StatusError(
        "FAILED_PRECONDITION",
        holder === "exported"
          ? `volume ${volume} is exported over NBD (snapblock volume export); one user at a time: stop the export first (snapblock volume unexport ${volume})`
          : `volume ${volume} is staged on this node (by a pod or snapblock volume attach); one user at a time: detach it first, or snapshot it and export the snapshot to read it meanwhile`,
      );
    }
    this.users.set(engineName, user);
  }

  release(engineName: string, user: VolumeUser): void {
    if (this.users.get(engineName) === user) this.users.delete(engineName);
  }

  holder(engineName: string): VolumeUser | undefined {
    return this.users.get(engineName);
  }
}
