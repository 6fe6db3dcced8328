import {
  PARAM_ALLOW_MODE_CHANGE,
  PARAM_FULL_COPY,
  capabilityMessage,
  type Capability,
} from "../pkg/csi/index.js";
import { sizeFlag } from "./size-flag.js";
import { usageError, type VerbSpec } from "./verb-spec.js";

/** What `volume create/restore/clone` asks for, read from the command line (pure). */
export interface CreatePlan {
  name: string;
  source?: { snapshot: { snapshotId: string } } | { volume: { volumeId: string } };
  /** undefined: the source's mode (a restore or clone), else a filesystem of the default type. */
  mode?: { kind: "block" } | { kind: "filesystem"; fsType: "ext4" | "xfs" };
  /** The exact size, sent as required_bytes and limit_bytes. */
  sizeBytes?: number;
  parameters: Record<string, string>;
  wait: boolean;
}

export interface CreateFlags {
  size?: string | undefined;
  fs?: string | undefined;
  block: boolean;
  "from-snapshot"?: string | undefined;
  "from-volume"?: string | undefined;
  "allow-mode-change": boolean;
  "full-copy": boolean;
  wait: boolean;
}

export function planCreate(
  spec: VerbSpec,
  verb: "create" | "restore" | "clone",
  flags: CreateFlags,
  positionals: string[],
): CreatePlan {
  let name: string;
  let source: CreatePlan["source"];
  if (verb === "create") {
    name = positionals[0]!;
    if (flags["from-snapshot"] !== undefined && flags["from-volume"] !== undefined)
      throw usageError(spec, "give --from-snapshot or --from-volume, not both");
    if (flags["from-snapshot"] !== undefined) source = { snapshot: { snapshotId: flags["from-snapshot"] } };
    if (flags["from-volume"] !== undefined) source = { volume: { volumeId: flags["from-volume"] } };
  } else {
    const id = positionals[0]!;
    name = positionals[1]!;
    source = verb === "restore" ? { snapshot: { snapshotId: id } } : { volume: { volumeId: id } };
  }
  if (flags.block && flags.fs !== undefined)
    throw usageError(spec, "--block volumes have no filesystem: give --block or --fs, not both");
  if (flags.fs !== undefined && flags.fs !== "ext4" && flags.fs !== "xfs")
    throw usageError(
      spec,
      `--fs ${JSON.stringify(flags.fs)} is not a filesystem snapblock makes: use ext4 or xfs`,
    );
  if (!source && flags["allow-mode-change"])
    throw usageError(
      spec,
      "--allow-mode-change is for a restore or clone: an empty volume has no source to differ from",
    );
  if (!source && flags["full-copy"])
    throw usageError(spec, "--full-copy needs a source to copy (a restore or clone)");
  if (flags.wait && !flags["full-copy"]) throw usageError(spec, "--wait follows a --full-copy: give both");
  const mode: CreatePlan["mode"] = flags.block
    ? { kind: "block" }
    : flags.fs !== undefined
      ? { kind: "filesystem", fsType: flags.fs }
      : undefined;
  return {
    name,
    ...(source ? { source } : {}),
    ...(mode ? { mode } : {}),
    ...(flags.size !== undefined ? { sizeBytes: sizeFlag(flags.size, "--size", { sectors: true }) } : {}),
    parameters: {
      ...(flags["full-copy"] ? { [PARAM_FULL_COPY]: "true" } : {}),
      ...(flags["allow-mode-change"] ? { [PARAM_ALLOW_MODE_CHANGE]: "true" } : {}),
    },
    wait: flags.wait,
  };
}

/** The CreateVolume request of a plan, once the mode is known ("filesystem" with "" : the default type). */
export function createVolumeRequest(
  plan: CreatePlan,
  mode: NonNullable<CreatePlan["mode"]> | { kind: "filesystem"; fsType: "" },
): object {
  const capability: Capability =
    mode.kind === "block"
      ? { accessType: "block", mode: "SINGLE_NODE_WRITER" }
      : { accessType: "mount", mode: "SINGLE_NODE_WRITER", fsType: mode.fsType, mountFlags: [] };
  return {
    name: plan.name,
    volumeCapabilities: [capabilityMessage(capability)],
    parameters: plan.parameters,
    ...(plan.sizeBytes !== undefined
      ? { capacityRange: { requiredBytes: plan.sizeBytes, limitBytes: plan.sizeBytes } }
      : {}),
    ...(plan.source ? { volumeContentSource: plan.source } : {}),
  };
}
