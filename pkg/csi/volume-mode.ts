import { StatusError } from "../errors/index.js";
import type { EngineMeta, EngineSnapshot } from "../engine-api/index.js";
import { invalidArgument } from "./request-errors.js";
import { PARAM_ALLOW_MODE_CHANGE } from "./storage-class-parameters.js";
import type { Capability, FsType } from "./volume-capabilities.js";
import { META, type VolumeFacts } from "./volume-view.js";

/**
 * Keeping a volume's mode with its data. A volume holds either a filesystem (mount access) or raw
 * block data (block access); used in the other mode, its data is misread, and a filesystem made
 * on a "blank-looking" device destroys raw data that blkid cannot recognise. Kubernetes guards
 * against this for snapshots (prevent-volume-mode-conversion: a volume restored from a snapshot
 * keeps the source's volumeMode unless the VolumeSnapshotContent allows a change); snapblock
 * keeps the same rule on every path, and one more the node needs:
 *
 * - a restore or clone inherits its source's mode and filesystem type; another mode is refused at
 *   CreateVolume (INVALID_ARGUMENT, the CSI spec's "source incompatible") unless the volume is
 *   created with parameters["snapblock.dev/allowModeChange"]="true";
 * - NodeStage in an access type the volume was not created for is FAILED_PRECONDITION (same opt-in);
 * - the node makes a filesystem only on a volume it knows to be new: never on one restored,
 *   cloned, or ever used as a raw block device (staged as block, exported read-write over NBD),
 *   whatever blkid says, unless the same opt-in was given.
 */
const OPT_IN = `create the volume with parameters["${PARAM_ALLOW_MODE_CHANGE}"]="true" (CLI: --allow-mode-change)`;

export type DataMode = { kind: "block" } | { kind: "filesystem"; fsType: FsType };

/**
 * What a volume's data is, as far as snapblock knows; undefined when it cannot tell. A volume made
 * for one access type holds that kind of data (a filesystem volume written raw through an NBD
 * export is still taken for a filesystem: it is one, or it is broken); one made for both holds
 * raw data once it was used raw.
 */
export function volumeDataMode(facts: VolumeFacts): DataMode | undefined {
  if (facts.accessTypes.size !== 1) return facts.rawUse ? { kind: "block" } : undefined;
  return facts.accessTypes.has("block") ? { kind: "block" } : { kind: "filesystem", fsType: facts.fsType };
}

/** Text form kept in a snapshot's metadata (META.dataMode). */
export function formatDataMode(mode: DataMode | undefined): string {
  if (!mode) return "";
  return mode.kind === "block" ? "block" : `filesystem:${mode.fsType}`;
}

export function parseDataMode(text: string | undefined): DataMode | undefined {
  if (text === "block") return { kind: "block" };
  if (text === "filesystem:ext4" || text === "filesystem:xfs")
    return { kind: "filesystem", fsType: text.slice("filesystem:".length) as FsType };
  return undefined;
}

/** What a snapshot holds ("block", "filesystem:ext4"; "" when snapblock cannot tell). */
export function snapshotDataMode(snapshot: EngineSnapshot): string {
  return formatDataMode(parseDataMode(snapshot.meta[META.dataMode]));
}

/** "raw block data", "an xfs filesystem": for messages. */
export function describeDataMode(mode: DataMode): string {
  return mode.kind === "block" ? "raw block data" : `an ${mode.fsType} filesystem`;
}

export interface SourceModeCheck {
  /** "snapshot local/x" or "volume local/y", for messages. */
  source: string;
  /** What the source holds; undefined when snapblock cannot tell (no check then). */
  mode: DataMode | undefined;
  capabilities: readonly Capability[];
  /** The filesystem type the request names (capability or parameter), if any. */
  requestedFsType: FsType | undefined;
  allowModeChange: boolean;
}

/**
 * The filesystem type of a volume made from a source: the requested one, else the source's. Throws
 * INVALID_ARGUMENT (CSI spec, CreateVolume: "Source incompatible or not supported ... the
 * requested source is not compatible with the requested volume") when the request would use the
 * source's data in another mode.
 */
export function inheritFromSource(check: SourceModeCheck): FsType | undefined {
  const { mode, source } = check;
  if (!mode) return check.requestedFsType;
  const optIn = `set parameters["${PARAM_ALLOW_MODE_CHANGE}"]="true" (CLI: --allow-mode-change)`;
  const wants = new Set(check.capabilities.map((c) => c.accessType));
  if (mode.kind === "block") {
    if (wants.has("mount") && !check.allowModeChange) {
      throw invalidArgument(
        `volume_content_source: ${source} holds raw block data, but volume_capabilities ask for a mounted filesystem, which could format over it; ask for block access (Kubernetes: volumeMode: Block; CLI: --block), or, if that data is itself a filesystem to mount, ${optIn}`,
      );
    }
    return check.requestedFsType;
  }
  if (wants.has("block") && !check.allowModeChange) {
    throw invalidArgument(
      `volume_content_source: ${source} holds ${describeDataMode(mode)}, but volume_capabilities ask for raw block access; ask for mount access (Kubernetes: volumeMode: Filesystem; CLI: --fs), or, to read the filesystem's blocks raw, ${optIn}`,
    );
  }
  if (check.requestedFsType !== undefined && check.requestedFsType !== mode.fsType) {
    throw invalidArgument(
      `volume_content_source: ${source} holds ${describeDataMode(mode)}, but the request asks for ${check.requestedFsType}; ask for ${mode.fsType} or leave the filesystem type out`,
    );
  }
  return mode.fsType;
}

export interface StagePlan {
  /** Set when a blank device must not be formatted: the whole message for the caller. */
  refuseFormat?: string;
  /** Record META.rawUse before the device is attached (block access, first time). */
  markRawUse: boolean;
}

/**
 * What NodeStageVolume may do with a volume: FAILED_PRECONDITION for an access type the volume
 * was not created for; for mount access, whether a blank device may get a filesystem.
 */
export function planStage(facts: VolumeFacts, volumeId: string, capability: Capability): StagePlan {
  checkAccessType(facts, volumeId, capability, "staged");
  if (capability.accessType === "block") return { markRawUse: !facts.rawUse };
  if (facts.allowModeChange) return { markRawUse: false };
  const colon = facts.source.indexOf(":");
  const history =
    colon > 0
      ? `it was ${facts.source.startsWith("snapshot:") ? "restored from snapshot" : "cloned from volume"} ${facts.source.slice(colon + 1)}`
      : facts.rawUse
        ? "it has been used as a raw block device"
        : undefined;
  if (!history) return { markRawUse: false };
  return {
    markRawUse: false,
    refuseFormat: `volume ${volumeId} holds no filesystem that blkid recognises, and ${history}: snapblock makes a filesystem only on a volume it knows to be new, never over data it did not write; to read what it holds, use it as a raw block device; to give it a new, empty filesystem and lose that content, ${OPT_IN}`,
  };
}

/**
 * FAILED_PRECONDITION for NodeStage/NodePublish in an access type the volume was not created for
 * (unless it was created with the opt-in).
 */
export function checkAccessType(
  facts: VolumeFacts,
  volumeId: string,
  capability: Capability,
  doing: "staged" | "published",
): void {
  if (facts.allowModeChange || facts.accessTypes.has(capability.accessType)) return;
  const made = facts.accessTypes.has("block") ? "raw block access" : `a mounted ${facts.fsType} filesystem`;
  const asked = capability.accessType === "block" ? "a raw block device" : "a mounted filesystem";
  throw new StatusError(
    "FAILED_PRECONDITION",
    `volume ${volumeId} was created for ${made} and is being ${doing} as ${asked}; use the access type it was created for (Kubernetes: the PV's volumeMode), or ${OPT_IN}`,
  );
}

/** The metadata change that records raw use (see StagePlan.markRawUse). */
export const RAW_USE_META: EngineMeta = { [META.rawUse]: "true" };
