/**
 * Recovery points are engine snapshots named "rp--<volume id>-<unix ms>". The prefix is reserved:
 * Pool.createSnapshot refuses user names that start with it (and the CSI name mapping hashes CSI
 * names that do), so a point can never collide with a user's snapshot. The volume id (never
 * reused in a pool) and the stamp (increasing per volume) make point names unique.
 */
export const POINT_PREFIX = "rp--";

export function pointName(volumeId: number, atMs: number): string {
  return `${POINT_PREFIX}${volumeId}-${atMs}`;
}

export function isPointName(name: string): boolean {
  return name.startsWith(POINT_PREFIX);
}
