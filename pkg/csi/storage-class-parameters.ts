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
/** "true": the volume may be used in another mode than its source's data (volume-mode.ts). */
export const PARAM_ALLOW_MODE_CHANGE = "snapblock.dev/allowModeChange";
const CO_PREFIX = "csi.storage.k8s.io/";

export interface VolumeParameters {
  fsType?: FsType;
  fullCopy: boolean;
  allowModeChange: boolean;
}

export function parseVolumeParameters(
  params: Record<string, string>,
  field = "parameters",
): VolumeParameters {
  rejectUnknown(params, [PARAM_FS_TYPE, PARAM_FULL_COPY, PARAM_ALLOW_MODE_CHANGE], field);
  const out: VolumeParameters = {
    fullCopy: booleanParameter(params, PARAM_FULL_COPY, field),
    allowModeChange: booleanParameter(params, PARAM_ALLOW_MODE_CHANGE, field),
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
  return out;
}

function booleanParameter(params: Record<string, string>, key: string, field: string): boolean {
  const value = params[key];
  if (value === undefined) return false;
  if (value !== "true" && value !== "false") {
    throw invalidArgument(`${field}["${key}"] must be "true" or "false", not ${JSON.stringify(value)}`);
  }
  return value === "true";
}

export const PARAM_REPLICAS = "snapblock.dev/replicas";
/** Most replicas a snapshot may ask for (besides its own node's copy). */
export const MAX_REPLICAS = 4;

export interface SnapshotParameters {
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
  rejectUnknown(params, [PARAM_REPLICAS], field);
  const out: SnapshotParameters = { replicas: 0, co: {} };
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

function rejectUnknown(params: Record<string, string>, known: readonly string[], field: string): void {
  const unknown = Object.keys(params).filter((k) => !known.includes(k) && !k.startsWith(CO_PREFIX));
  if (unknown.length > 0) {
    const accepted = known.length > 0 ? `accepted: ${known.join(", ")}` : "snapblock accepts none here";
    throw invalidArgument(
      `unknown ${field} ${unknown.map((k) => JSON.stringify(k)).join(", ")} (${accepted}; keys under ${CO_PREFIX} are ignored)`,
    );
  }
}
