import { describeBytes } from "../pkg/byte-size/index.js";
import { CONTEXT_FS_TYPE, CONTEXT_VOLUME_MODE, type CsiVolumeOutput } from "../pkg/csi/index.js";

/** How the CLI shows a volume: "key: value" lines of `volume get` and `create`. */
export function volumeFields(v: CsiVolumeOutput): Array<[string, string]> {
  const mode = modeOf(v);
  return [
    ["volume id", v.volumeId],
    ["size", describeBytes(v.capacityBytes)],
    ["mode", mode === "block" ? "block (raw block device)" : `filesystem (${mode})`],
    ["source", sourceOf(v) || "(empty volume)"],
    ["node", v.accessibleTopology.map((t) => Object.values(t.segments).join(",")).join(" ")],
  ];
}

/** "block", "ext4", "xfs" or "block,ext4" (a volume made for both), from the volume context. */
export function modeOf(v: CsiVolumeOutput): string {
  const fsType = v.volumeContext[CONTEXT_FS_TYPE];
  const modes = (v.volumeContext[CONTEXT_VOLUME_MODE] ?? "filesystem").split(",");
  return modes.map((m) => (m === "block" ? "block" : (fsType ?? "ext4"))).join(",");
}

export function sourceOf(v: CsiVolumeOutput): string {
  const s = v.contentSource;
  if (s?.snapshot) return `snapshot ${s.snapshot.snapshotId}`;
  if (s?.volume) return `volume ${s.volume.volumeId}`;
  return "";
}
