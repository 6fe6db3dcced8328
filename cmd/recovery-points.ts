import { status } from "@grpc/grpc-js";
import { formatByteSize } from "../pkg/byte-size/index.js";
import { parseResourceId } from "../pkg/csi/index.js";
import type { OperatorConnection } from "./operator-connection.js";
import { OperatorError, failedWith } from "./operator-error.js";
import { SpaceFigures } from "./space-figures.js";
import { printJson, printTable, type Output } from "./table-output.js";
import { UsageError } from "./usage-error.js";

/**
 * Recovery points from the command line (docs/protection.md, docs/cli.md): points are snapshots
 * to CSI, named "<node>/rp--<volume id>-<unix ms>", listed through ListSnapshots filtered by their
 * volume, and the policy is set with ControllerModifyVolume, so the CLI needs no call of its own.
 */
export const PROTECTION_KEY = "snapblock.dev/protection";
const POINT_MARK = "/rp--";

/** A snapshot id that names a recovery point ("<node>/rp--..."). */
export function isPointId(snapshotId: string): boolean {
  return snapshotId.includes(POINT_MARK);
}

export interface PointRow {
  snapshotId: string;
  time: Date;
  sizeBytes: number;
  /** What deleting it would give back, when the Space service answers. */
  exclusiveBytes?: number;
  /**
   * Pinned by an export to Kubernetes (pinForKubernetes): never thinned. Absent when the endpoint
   * has no operator service to say.
   */
  pinned?: boolean;
}

interface SnapshotEntry {
  snapshot: {
    snapshotId: string;
    sourceVolumeId: string;
    sizeBytes: number;
    creationTime: { seconds: number | string; nanos: number } | null;
  };
}

/** "VOLUME_ID@TIME" with TIME in RFC 3339 with a zone ("2026-11-30T15:04:05Z"); else undefined. */
export function parsePointRef(arg: string): { volumeId: string; atMs: number } | undefined {
  const at = arg.lastIndexOf("@");
  if (at < 0) return undefined;
  const volumeId = arg.slice(0, at);
  const atMs = parseTime(arg.slice(at + 1), `in ${JSON.stringify(arg)}`);
  if (volumeId === "") throw new UsageError(`${JSON.stringify(arg)} names no volume before the "@"`);
  return { volumeId, atMs };
}

/** RFC 3339 with a zone: a time without one would mean different points on different machines. */
export function parseTime(text: string, where: string): number {
  const ms = /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$/i.test(text)
    ? Date.parse(text)
    : NaN;
  if (Number.isNaN(ms))
    throw new UsageError(
      `${JSON.stringify(text)} ${where} is not a time: use RFC 3339 with a zone, e.g. 2026-11-30T15:04:05Z`,
    );
  return ms;
}

/** The volume's recovery points, oldest first. NOT_FOUND when the volume does not exist. */
export async function listPoints(conn: OperatorConnection, volumeId: string): Promise<PointRow[]> {
  // ListSnapshots answers an unknown source volume with no entries (CSI spec): ask for the volume.
  await conn.controller("ControllerGetVolume", { volumeId });
  const rows: PointRow[] = [];
  let startingToken = "";
  do {
    const page = await conn.controller<{ entries: SnapshotEntry[]; nextToken: string }>("ListSnapshots", {
      sourceVolumeId: volumeId,
      maxEntries: 1000,
      startingToken,
    });
    for (const { snapshot: s } of page.entries) {
      if (!isPointId(s.snapshotId)) continue;
      const t = s.creationTime;
      rows.push({
        snapshotId: s.snapshotId,
        time: new Date(t ? Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6) : 0),
        sizeBytes: Number(s.sizeBytes),
      });
    }
    startingToken = page.nextToken;
  } while (startingToken !== "");
  return rows.sort((a, b) => a.time.getTime() - b.time.getTime());
}

/** The newest point at or before `atMs`; NOT_FOUND saying what there is otherwise. */
export async function pointAt(conn: OperatorConnection, volumeId: string, atMs: number): Promise<PointRow> {
  const points = await listPoints(conn, volumeId);
  const found = points.filter((p) => p.time.getTime() <= atMs).pop();
  if (found) return found;
  const when = new Date(atMs).toISOString();
  throw new OperatorError(
    points.length === 0
      ? `volume ${volumeId} has no recovery points (is it protected? snapblock volume protect ${volumeId} --policy ...)`
      : `volume ${volumeId} has no recovery point at or before ${when}; its oldest is ${points[0]!.time.toISOString()}`,
    status.NOT_FOUND,
  );
}

export async function protect(
  conn: OperatorConnection,
  out: Output,
  volumeId: string,
  policy: string,
): Promise<number> {
  await conn.controller("ControllerModifyVolume", {
    volumeId,
    mutableParameters: { [PROTECTION_KEY]: policy },
  });
  const off = policy.trim().toLowerCase() === "off";
  if (out.json) printJson(out, { volumeId, policy });
  else
    out.write(
      off
        ? `volume ${volumeId} is not protected any more; its recovery points stay until deleted\n`
        : `volume ${volumeId} is protected: ${policy}\n`,
    );
  return 0;
}

/**
 * Marks the points the operator service says are pinned (rows of one volume); leaves `pinned`
 * absent when the endpoint has no operator service.
 */
export async function markPinned(
  conn: OperatorConnection,
  volumeId: string,
  rows: PointRow[],
): Promise<void> {
  let ids: string[];
  try {
    ids = (await conn.operator("ListPinnedPoints", (c) => c.listPinnedPoints(volumeId))).snapshotIds;
  } catch (err) {
    if (failedWith(err, status.UNIMPLEMENTED)) return;
    throw err;
  }
  const pinned = new Set(ids);
  for (const r of rows) r.pinned = pinned.has(r.snapshotId);
}

/**
 * Pins the point a restore at `atMs` would use, for its export as a VolumeSnapshot: from now on
 * its policy does not thin it; DeleteSnapshot (the VolumeSnapshotContent deleted, deletionPolicy
 * Delete) deletes it, `volume unpin` releases it. A point thinned between the listing and the pin
 * is looked up again (the point at that time is then an older one).
 */
export async function pinForKubernetes(
  conn: OperatorConnection,
  volumeId: string,
  atMs: number,
): Promise<PointRow> {
  for (let attempt = 1; ; attempt++) {
    const point = await pointAt(conn, volumeId, atMs);
    try {
      await conn.operator("SetPointPinned", (c) => c.setPointPinned(point.snapshotId, true));
      return { ...point, pinned: true };
    } catch (err) {
      if (attempt < 3 && failedWith(err, status.NOT_FOUND)) continue;
      throw err;
    }
  }
}

/** `volume unpin`: hands a pinned point back to its policy (which may thin it at its next tick). */
export async function unpin(conn: OperatorConnection, out: Output, ref: string): Promise<number> {
  const at = parsePointRef(ref);
  let point: Pick<PointRow, "snapshotId"> & { time?: Date };
  if (at) point = await pointAt(conn, at.volumeId, at.atMs);
  else if (isPointId(ref)) point = { snapshotId: ref };
  else
    throw new UsageError(
      `${JSON.stringify(ref)} is neither VOLUME_ID@TIME nor a recovery point id (NODE/rp--...)`,
    );
  const res = await conn.operator("SetPointPinned", (c) => c.setPointPinned(point.snapshotId, false));
  if (out.json) printJson(out, { snapshotId: point.snapshotId, pinned: res.pinned });
  else
    out.write(
      `recovery point ${point.snapshotId}${point.time ? ` of ${point.time.toISOString()}` : ""} is not pinned: its policy may thin it from now on, and a VolumeSnapshot made of it then loses its content\n`,
    );
  return 0;
}

export async function showPoints(conn: OperatorConnection, out: Output, volumeId: string): Promise<number> {
  const points = await listPoints(conn, volumeId);
  const space = await SpaceFigures.fetch(conn);
  for (const p of points) {
    const figures = space?.snapshot(p.snapshotId);
    if (figures) p.exclusiveBytes = figures.exclusiveBytes;
  }
  await markPinned(conn, volumeId, points);
  if (out.json) {
    printJson(
      out,
      points.map((p) => ({ ...p, time: p.time.toISOString() })),
    );
    return 0;
  }
  printTable(
    out,
    ["TIME", "POINT ID", "EXCLUSIVE", "PINNED"],
    points.map((p) => [
      p.time.toISOString(),
      p.snapshotId,
      p.exclusiveBytes === undefined ? "?" : formatByteSize(p.exclusiveBytes),
      p.pinned === undefined ? "?" : p.pinned ? "PINNED" : "-",
    ]),
  );
  return 0;
}

/** A Kubernetes object name (DNS subdomain), or a usage error saying what it is not. */
export function checkObjectName(name: string): string {
  if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(name))
    throw new UsageError(
      `${JSON.stringify(name)} is not a Kubernetes object name (lowercase letters, digits, '-', '.')`,
    );
  return name;
}

/**
 * A pre-provisioned VolumeSnapshotContent and its VolumeSnapshot for a (pinned) point, as YAML
 * for `kubectl apply -f -`. deletionPolicy Delete: deleting the VolumeSnapshot deletes the point
 * (csi-snapshotter's DeleteSnapshot), which also ends its pin.
 */
export function kubernetesObjects(o: {
  point: PointRow;
  driver: string;
  namespace: string;
  name?: string;
}): string {
  const ref = parseResourceId(o.point.snapshotId);
  const stamp = o.point.time.toISOString().replace(/[-:]/g, "").replace(/\.\d+/, "").toLowerCase();
  const name = checkObjectName(
    o.name ?? `point-${(ref?.engineName ?? "x").replace(/[^a-z0-9-]/g, "-").slice(0, 40)}-${stamp}`,
  );
  const q = JSON.stringify;
  return [
    "apiVersion: snapshot.storage.k8s.io/v1",
    "kind: VolumeSnapshotContent",
    "metadata:",
    `  name: ${q(`${name}-content`)}`,
    "spec:",
    "  deletionPolicy: Delete",
    `  driver: ${q(o.driver)}`,
    "  source:",
    `    snapshotHandle: ${q(o.point.snapshotId)}`,
    "  volumeSnapshotRef:",
    `    name: ${q(name)}`,
    `    namespace: ${q(o.namespace)}`,
    "---",
    "apiVersion: snapshot.storage.k8s.io/v1",
    "kind: VolumeSnapshot",
    "metadata:",
    `  name: ${q(name)}`,
    `  namespace: ${q(o.namespace)}`,
    "spec:",
    "  source:",
    `    volumeSnapshotContentName: ${q(`${name}-content`)}`,
    "",
  ].join("\n");
}
