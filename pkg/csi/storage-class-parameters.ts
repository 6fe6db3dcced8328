import { parseByteQuantity } from "./byte-quantity.js";
import { PARAM_PROTECTION, readProtection } from "./protection-parameter.js";
import { invalidArgument } from "./request-errors.js";
import { SUPPORTED_FS_TYPES, type FsType } from "./volume-capabilities.js";

/**
 * StorageClass / VolumeSnapshotClass parameters snapblock understands. The CSI spec leaves
 * parameters to the plugin ("The Plugin is responsible for parsing and validating these
 * parameters"); unknown keys are refused with INVALID_ARGUMENT naming them, so a typo in a
 * StorageClass is found at the first PVC instead of silently ignored.
 *
 * Keys under csi.storage.k8s.io/ are the CO's own (csi-provisioner and csi-snapshotter add
 * pvc/pv/volumesnapshot names with --extra-create-metadata) and are accepted and ignored.
 */
export const PARAM_FS_TYPE = "fsType";
export const PARAM_FULL_COPY = "snapblock.dev/fullCopy";
/** Per-volume limits on snapshots (docs/csi.md, "Snapshot limits"), as Longhorn's. */
export const PARAM_MAX_SNAPSHOTS = "snapblock.dev/maxSnapshots";
export const PARAM_MAX_SNAPSHOT_SPACE = "snapblock.dev/maxSnapshotSpace";
/** VolumeSnapshotClass: "false" snapshots a staged filesystem without freezing it. */
export const PARAM_FREEZE = "snapblock.dev/freeze";
/** "true": the volume may be used in another mode than its source's data (volume-mode.ts). */
export const PARAM_ALLOW_MODE_CHANGE = "snapblock.dev/allowModeChange";
const CO_PREFIX = "csi.storage.k8s.io/";
/** A limit so high it is no limit is refused too: it is a typo more often than a wish. */
const MAX_SNAPSHOTS_CEILING = 100_000;

export interface VolumeParameters {
  fsType?: FsType;
  fullCopy: boolean;
  /** Most snapshots the volume may have (at least 1). */
  maxSnapshots?: number;
  /** Most bytes its snapshots may hold that nothing else maps (at least 1). */
  maxSnapshotBytes?: number;
  allowModeChange: boolean;
  /** Protection policy (canonical text, "off" for none), when the parameter is given. */
  protection?: string;
}

export function parseVolumeParameters(
  params: Record<string, string>,
  field = "parameters",
): VolumeParameters {
  rejectUnknown(
    params,
    [
      PARAM_FS_TYPE,
      PARAM_FULL_COPY,
      PARAM_ALLOW_MODE_CHANGE,
      PARAM_MAX_SNAPSHOTS,
      PARAM_MAX_SNAPSHOT_SPACE,
      PARAM_PROTECTION,
    ],
    field,
  );
  const out: VolumeParameters = {
    fullCopy: parseBoolean(params, PARAM_FULL_COPY, field) ?? false,
    allowModeChange: parseBoolean(params, PARAM_ALLOW_MODE_CHANGE, field) ?? false,
  };
  const fs = params[PARAM_FS_TYPE];
  if (fs !== undefined && fs !== "") {
    const lower = fs.toLowerCase();
    if (!(SUPPORTED_FS_TYPES as readonly string[]).includes(lower)) {
      throw invalidArgument(
        `${field}.${PARAM_FS_TYPE} ${JSON.stringify(fs)} is not supported: use ${SUPPORTED_FS_TYPES.join(" or ")}`,
      );
    }
    out.fsType = lower as FsType;
  }
  const count = params[PARAM_MAX_SNAPSHOTS];
  if (count !== undefined) {
    const n = /^\d+$/.test(count.trim()) ? Number(count) : NaN;
    if (!Number.isInteger(n) || n < 1 || n > MAX_SNAPSHOTS_CEILING) {
      throw invalidArgument(
        `${field}["${PARAM_MAX_SNAPSHOTS}"] must be a whole number from 1 to ${MAX_SNAPSHOTS_CEILING}, not ${JSON.stringify(count)}`,
      );
    }
    out.maxSnapshots = n;
  }
  const space = params[PARAM_MAX_SNAPSHOT_SPACE];
  if (space !== undefined)
    out.maxSnapshotBytes = parseByteQuantity(space, `${field}["${PARAM_MAX_SNAPSHOT_SPACE}"]`);
  const protection = params[PARAM_PROTECTION];
  if (protection !== undefined) out.protection = readProtection(protection, field);
  return out;
}

export const PARAM_REPLICAS = "snapblock.dev/replicas";
/** Most replicas a snapshot may ask for (besides its own node's copy). */
export const MAX_REPLICAS = 4;

export interface SnapshotParameters {
  /** Freeze a staged filesystem around the snapshot (default true). */
  freezeFilesystem: boolean;
  /** Copies on other nodes (cluster mode; local mode has one node and keeps 0). */
  replicas: number;
  /** The CO's own keys (VolumeSnapshot name and namespace), kept for Events about the snapshot. */
  co: Record<string, string>;
}

/** VolumeSnapshotClass parameters. */
export function parseSnapshotParameters(
  params: Record<string, string>,
  field = "parameters",
): SnapshotParameters {
  rejectUnknown(params, [PARAM_FREEZE, PARAM_REPLICAS], field);
  const out: SnapshotParameters = {
    freezeFilesystem: parseBoolean(params, PARAM_FREEZE, field) ?? true,
    replicas: 0,
    co: {},
  };
  const raw = params[PARAM_REPLICAS];
  if (raw !== undefined) {
    const n = Number(raw);
    if (raw.trim() === "" || !Number.isInteger(n) || n < 0 || n > MAX_REPLICAS) {
      throw invalidArgument(
        `${field}["${PARAM_REPLICAS}"] must be a whole number from 0 to ${MAX_REPLICAS}, not ${JSON.stringify(raw)}`,
      );
    }
    out.replicas = n;
  }
  for (const [k, v] of Object.entries(params)) if (k.startsWith(`${CO_PREFIX}volumesnapshot/`)) out.co[k] = v;
  return out;
}

/**
 * VolumeGroupSnapshotClass parameter: how long writes may be held on the members of a group that
 * spans nodes ("500ms", "2s"; default 2 s, at most 30 s). Past it the group fails (ABORTED) and
 * leaves nothing behind (docs/csi.md, "Group snapshots").
 */
export const PARAM_GROUP_HOLD_TIMEOUT = "snapblock.dev/holdTimeout";
const MAX_GROUP_HOLD_MS = 30_000;

/**
 * VolumeGroupSnapshotClass parameters: the hold bound; the CO's own keys are accepted and ignored.
 * Filesystems are not frozen for groups, so snapblock.dev/freeze is not taken here.
 */
export function parseGroupSnapshotParameters(params: Record<string, string>): { holdMs?: number } {
  rejectUnknown(params, [PARAM_GROUP_HOLD_TIMEOUT], "parameters");
  const raw = params[PARAM_GROUP_HOLD_TIMEOUT];
  if (raw === undefined) return {};
  const m = /^(\d+(?:\.\d+)?)(ms|s)$/.exec(raw.trim());
  const ms = m ? Number(m[1]) * (m[2] === "s" ? 1000 : 1) : NaN;
  if (!(ms >= 1 && ms <= MAX_GROUP_HOLD_MS)) {
    throw invalidArgument(
      `parameters["${PARAM_GROUP_HOLD_TIMEOUT}"] must be a duration from 1ms to 30s ("500ms", "2s"), not ${JSON.stringify(raw)}`,
    );
  }
  return { holdMs: Math.round(ms) };
}

function parseBoolean(params: Record<string, string>, key: string, field: string): boolean | undefined {
  const value = params[key];
  if (value === undefined) return undefined;
  if (value !== "true" && value !== "false") {
    throw invalidArgument(`${field}["${key}"] must be "true" or "false", not ${JSON.stringify(value)}`);
  }
  return value === "true";
}

function rejectUnknown(params: Record<string, string>, known: readonly string[], field: string): void {
  const unknown = Object.keys(params).filter((k) => !known.includes(k) && !k.startsWith(CO_PREFIX));
  if (unknown.length > 0) {
    const accepted = known.length > 0 ? `accepted: ${known.join(", ")}` : "snapblock accepts none here";
    throw invalidArgument(
      `unknown ${field} ${unknown.map((k) => JSON.stringify(k)).join(", ")} (${accepted}; keys under ${CO_PREFIX} are ignored)`,
    );
  }
}
