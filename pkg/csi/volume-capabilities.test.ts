import { describe, expect, it } from "vitest";
import type { VolumeCapability__Output } from "./generated/csi/v1/VolumeCapability.js";
import { parseVolumeParameters, parseSnapshotParameters } from "./storage-class-parameters.js";
import {
  checkCapability,
  parseCapabilities,
  requestedFsType,
  requireCapabilities,
  serializeCapabilities,
} from "./volume-capabilities.js";

const mount = (
  mode: string,
  fsType = "",
  mountFlags: string[] = [],
  volumeMountGroup = "",
): VolumeCapability__Output => ({
  mount: { fsType, mountFlags, volumeMountGroup },
  accessMode: { mode: mode as never },
  accessType: "mount",
});
const block = (mode: string): VolumeCapability__Output => ({
  block: {},
  accessMode: { mode: mode as never },
  accessType: "block",
});

describe("volume capabilities", () => {
  it("accepts the single-node modes with block or ext4/xfs mounts", () => {
    for (const mode of [
      "SINGLE_NODE_WRITER",
      "SINGLE_NODE_SINGLE_WRITER",
      "SINGLE_NODE_MULTI_WRITER",
      "SINGLE_NODE_READER_ONLY",
    ]) {
      expect(checkCapability(mount(mode, "xfs"), "c").ok).toBe(true);
      expect(checkCapability(block(mode), "c").ok).toBe(true);
    }
  });

  it("explains what is unsupported, and throws on what is malformed", () => {
    const multi = checkCapability(mount("MULTI_NODE_MULTI_WRITER"), "c");
    expect(multi.ok ? "" : multi.reason).toMatch(/one node/);
    const fs = checkCapability(mount("SINGLE_NODE_WRITER", "vfat"), "c");
    expect(fs.ok ? "" : fs.reason).toMatch(/vfat/);
    const group = checkCapability(mount("SINGLE_NODE_WRITER", "", [], "1000"), "c");
    expect(group.ok).toBe(false);
    expect(() => checkCapability({ accessMode: { mode: "SINGLE_NODE_WRITER" } }, "c")).toThrow(
      /block or mount/,
    );
    expect(() => checkCapability({ ...block("UNKNOWN") }, "c")).toThrow(/access_mode/);
    expect(() => requireCapabilities([], "volume_capabilities")).toThrow(/at least one/);
  });

  it("stores capabilities in a stable form", () => {
    const a = requireCapabilities(
      [mount("SINGLE_NODE_WRITER", "ext4", ["noatime", "discard"]), block("SINGLE_NODE_WRITER")],
      "c",
    );
    const b = requireCapabilities(
      [block("SINGLE_NODE_WRITER"), mount("SINGLE_NODE_WRITER", "ext4", ["discard", "noatime"])],
      "c",
    );
    expect(serializeCapabilities(a)).toBe(serializeCapabilities(b));
    expect(serializeCapabilities(parseCapabilities(serializeCapabilities(a)))).toBe(serializeCapabilities(a));
    expect(requestedFsType(a, "c")).toBe("ext4");
    expect(() =>
      requestedFsType(
        requireCapabilities([mount("SINGLE_NODE_WRITER", "ext4"), mount("SINGLE_NODE_WRITER", "xfs")], "c"),
        "c",
      ),
    ).toThrow(/different/);
  });
});

describe("StorageClass parameters", () => {
  it("reads fsType and the full-copy and mode-change options, ignores the CO's own keys", () => {
    expect(parseVolumeParameters({})).toEqual({ fullCopy: false, allowModeChange: false });
    expect(
      parseVolumeParameters({
        fsType: "XFS",
        "snapblock.dev/fullCopy": "true",
        "csi.storage.k8s.io/pvc/name": "x",
      }),
    ).toEqual({ fsType: "xfs", fullCopy: true, allowModeChange: false });
    expect(parseVolumeParameters({ "snapblock.dev/allowModeChange": "true" })).toEqual({
      fullCopy: false,
      allowModeChange: true,
    });
    parseSnapshotParameters({ "csi.storage.k8s.io/volumesnapshot/name": "s" });
  });

  it("names unknown keys and bad values", () => {
    expect(() => parseVolumeParameters({ fstype: "ext4", replicas: "2" })).toThrow(/"fstype", "replicas"/);
    expect(() => parseVolumeParameters({ fsType: "zfs" })).toThrow(/zfs/);
    expect(() => parseVolumeParameters({ "snapblock.dev/fullCopy": "1" })).toThrow(/"true" or "false"/);
    expect(() => parseVolumeParameters({ "snapblock.dev/allowModeChange": "yes" })).toThrow(
      /allowModeChange"\] must be "true" or "false"/,
    );
    expect(() => parseSnapshotParameters({ retention: "1d" })).toThrow(/"retention"/);
  });
});
