import { SnapblockError, isSnapblockError } from "../errors/index.js";
import { parseProtectionPolicy } from "../engine-api/index.js";
import { invalidArgument } from "./request-errors.js";

/**
 * The volume's protection policy (recovery points, docs/protection.md): a StorageClass parameter
 * at CreateVolume, and the one mutable parameter (CSI v1.12 mutable_parameters, i.e. a Kubernetes
 * VolumeAttributesClass) that CreateVolume, ValidateVolumeCapabilities and ControllerModifyVolume
 * accept.
 */
export const PARAM_PROTECTION = "snapblock.dev/protection";

/** The policy's canonical text ("off" for none); INVALID_ARGUMENT naming the field otherwise. */
export function readProtection(value: string, field: string): string {
  try {
    return parseProtectionPolicy(value)?.text ?? "off";
  } catch (err) {
    if (isSnapblockError(err, "INVALID_ARGUMENT"))
      throw new SnapblockError("INVALID_ARGUMENT", `${field}["${PARAM_PROTECTION}"]: ${err.message}`);
    throw err;
  }
}

export interface MutableParameters {
  /** Canonical policy text, "off" to turn it off; undefined when not given. */
  protection?: string;
}

/**
 * mutable_parameters: only PARAM_PROTECTION. Unknown keys are INVALID_ARGUMENT (the CSI spec,
 * ControllerModifyVolume: "the plugin MUST return INVALID_ARGUMENT" for parameters it does not
 * support or cannot modify), so a typo in a VolumeAttributesClass is found at once.
 */
export function parseMutableParameters(params: Record<string, string>, field: string): MutableParameters {
  const unknown = Object.keys(params).filter((k) => k !== PARAM_PROTECTION);
  if (unknown.length > 0) {
    throw invalidArgument(
      `unknown ${field} ${unknown.map((k) => JSON.stringify(k)).join(", ")} (accepted: ${PARAM_PROTECTION})`,
    );
  }
  const value = params[PARAM_PROTECTION];
  return value === undefined ? {} : { protection: readProtection(value, field) };
}
