import type { VolumeCapability, VolumeCapability__Output } from "./generated/csi/v1/VolumeCapability.js";
import { invalidArgument } from "./request-errors.js";

/** Filesystems the node can make and mount (docs/design.md section 4). */
export const SUPPORTED_FS_TYPES = ["ext4", "xfs"] as const;
export type FsType = (typeof SUPPORTED_FS_TYPES)[number];
export const DEFAULT_FS_TYPE: FsType = "ext4";

/**
 * Access modes snapblock serves: a volume lives on one node's disk, so only the single-node modes.
 * CSI spec, SINGLE_NODE_MULTI_WRITER capability: "Plugins MUST accept and allow use of the
 * SINGLE_NODE_WRITER access mode when either SINGLE_NODE_SINGLE_WRITER and/or
 * SINGLE_NODE_MULTI_WRITER are supported".
 */
export const SUPPORTED_ACCESS_MODES = [
  "SINGLE_NODE_WRITER",
  "SINGLE_NODE_SINGLE_WRITER",
  "SINGLE_NODE_MULTI_WRITER",
  "SINGLE_NODE_READER_ONLY",
] as const;
export type AccessMode = (typeof SUPPORTED_ACCESS_MODES)[number];

/** A validated capability, in the form stored with a volume and compared on retries. */
export type Capability =
  | { accessType: "block"; mode: AccessMode }
  | { accessType: "mount"; mode: AccessMode; fsType: FsType | ""; mountFlags: string[] };

/** Outcome of checking one capability: supported, unsupported (a reason), or malformed. */
export type CapabilityCheck = { ok: true; capability: Capability } | { ok: false; reason: string };

/**
 * Checks one capability. Malformed ones (no access type, no access mode) throw INVALID_ARGUMENT
 * (CSI spec "Missing required field"); well-formed but unsupported ones come back with a reason,
 * which CreateVolume turns into INVALID_ARGUMENT and ValidateVolumeCapabilities into an
 * unconfirmed answer.
 */
export function checkCapability(
  cap: VolumeCapability__Output | null | undefined,
  field: string,
): CapabilityCheck {
  if (!cap) throw invalidArgument(`${field} is required`);
  const mode = cap.accessMode?.mode;
  if (mode === undefined || mode === "UNKNOWN") {
    throw invalidArgument(`${field}.access_mode is required (e.g. SINGLE_NODE_WRITER)`);
  }
  if (
    cap.accessType === undefined ||
    (cap.accessType === "mount" && !cap.mount) ||
    (cap.accessType === "block" && !cap.block)
  ) {
    throw invalidArgument(`${field} needs an access type: block or mount`);
  }
  if (!(SUPPORTED_ACCESS_MODES as readonly string[]).includes(mode)) {
    return {
      ok: false,
      reason: `access mode ${mode} is not supported: a snapblock volume lives on one node's disk; use one of ${SUPPORTED_ACCESS_MODES.join(", ")}`,
    };
  }
  const accessMode = mode as AccessMode;
  if (cap.accessType === "block") return { ok: true, capability: { accessType: "block", mode: accessMode } };
  const mount = cap.mount!;
  const fsType = mount.fsType;
  if (fsType !== "" && !(SUPPORTED_FS_TYPES as readonly string[]).includes(fsType)) {
    return {
      ok: false,
      reason: `filesystem type ${JSON.stringify(fsType)} is not supported: use ${SUPPORTED_FS_TYPES.join(" or ")}`,
    };
  }
  if (mount.volumeMountGroup !== "") {
    return {
      ok: false,
      reason: "volume_mount_group is not supported (no VOLUME_MOUNT_GROUP node capability)",
    };
  }
  return {
    ok: true,
    capability: {
      accessType: "mount",
      mode: accessMode,
      fsType: fsType as FsType | "",
      mountFlags: [...mount.mountFlags],
    },
  };
}

/**
 * Checks a REQUIRED list of capabilities where any unsupported one fails the call (CreateVolume:
 * "If ANY of the specified volume capabilities are not supported by the SP, the call MUST return
 * the appropriate gRPC error code", i.e. INVALID_ARGUMENT).
 */
export function requireCapabilities(caps: VolumeCapability__Output[], field: string): Capability[] {
  if (caps.length === 0) throw invalidArgument(`${field} is required: give at least one volume capability`);
  return caps.map((cap, i) => {
    const check = checkCapability(cap, `${field}[${i}]`);
    if (!check.ok) throw invalidArgument(`${field}[${i}]: ${check.reason}`);
    return check.capability;
  });
}

/** One required capability (NodeStageVolume, NodePublishVolume). */
export function requireCapability(cap: VolumeCapability__Output | null, field: string): Capability {
  const check = checkCapability(cap, field);
  if (!check.ok) throw invalidArgument(`${field}: ${check.reason}`);
  return check.capability;
}

/** The one filesystem the mount capabilities agree on, if they name one. */
export function requestedFsType(caps: readonly Capability[], field: string): FsType | undefined {
  const named = new Set<FsType>();
  for (const c of caps) if (c.accessType === "mount" && c.fsType !== "") named.add(c.fsType);
  if (named.size > 1) {
    throw invalidArgument(
      `${field} name different filesystem types (${[...named].join(", ")}): a volume has one`,
    );
  }
  return [...named][0];
}

/** Stable text form for storing capabilities with a volume and comparing them on a retry. */
export function serializeCapabilities(caps: readonly Capability[]): string {
  const normal = caps
    .map((c) =>
      c.accessType === "block"
        ? { t: "block", m: c.mode }
        : { t: "mount", m: c.mode, f: c.fsType, o: [...c.mountFlags].sort() },
    )
    .map((c) => JSON.stringify(c))
    .sort();
  return JSON.stringify([...new Set(normal)]);
}

export function parseCapabilities(text: string | undefined): Capability[] {
  if (!text) return [];
  const rows = JSON.parse(text) as string[];
  return rows.map((row) => {
    const c = JSON.parse(row) as { t: string; m: AccessMode; f?: FsType | ""; o?: string[] };
    return c.t === "block"
      ? { accessType: "block", mode: c.m }
      : { accessType: "mount", mode: c.m, fsType: c.f ?? "", mountFlags: c.o ?? [] };
  });
}

/** Wire form of a capability (the CLI and tests build requests with it). */
export function capabilityMessage(c: Capability): VolumeCapability {
  if (c.accessType === "block") return { block: {}, accessMode: { mode: c.mode } };
  return { mount: { fsType: c.fsType, mountFlags: c.mountFlags }, accessMode: { mode: c.mode } };
}
