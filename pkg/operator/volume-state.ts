import type { DataPathAttachment, DataPathExport } from "./data-path.js";
import type { VolumeStateName } from "./operator-messages.js";

export interface VolumeUse {
  state: VolumeStateName;
  reason: string;
  devicePath: string;
  mountPoints: string[];
}

/**
 * What a volume's state is on this node, from what the data path holds (undefined: detached):
 * - broken: the block device's path is broken (the reason says what and what to do);
 * - attached: a block device exists but no filesystem of it is mounted (a stage that stopped
 *   half-way, for a filesystem volume);
 * - staged: mounted at the staging path (filesystem), or attached (raw block, where staging is
 *   the device);
 * - published: bind-mounted somewhere besides (filesystem), or its device node bind-mounted;
 * - exported: served over NBD to a person's tools.
 */
export function volumeUse(o: {
  /** The volume holds a filesystem (mount access); false for raw block volumes. */
  filesystem: boolean;
  attachment: DataPathAttachment | undefined;
  export: DataPathExport | undefined;
}): VolumeUse | undefined {
  const a = o.attachment;
  if (a === undefined) {
    return o.export ? { state: "exported", reason: "", devicePath: "", mountPoints: [] } : undefined;
  }
  const devicePath = a.devicePath ?? "";
  if (a.health === "broken") {
    return {
      state: "broken",
      reason: `${a.problems.join("; ")}; detach it and attach it again (NodeUnstage, then NodeStage)`,
      devicePath,
      mountPoints: [],
    };
  }
  if (o.filesystem && a.filesystemMounts.length > 0) {
    return {
      state: a.filesystemMounts.length > 1 ? "published" : "staged",
      reason: "",
      devicePath,
      mountPoints: a.filesystemMounts,
    };
  }
  if (a.deviceBindMounts.length > 0)
    return { state: "published", reason: "", devicePath, mountPoints: a.deviceBindMounts };
  return { state: o.filesystem ? "attached" : "staged", reason: "", devicePath, mountPoints: [] };
}
