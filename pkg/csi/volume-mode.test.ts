import { describe, expect, it } from "vitest";
import type { EngineVolume } from "../engine-api/index.js";
import { serializeCapabilities, type Capability } from "./volume-capabilities.js";
import {
  checkAccessType,
  formatDataMode,
  inheritFromSource,
  parseDataMode,
  planStage,
  volumeDataMode,
} from "./volume-mode.js";
import { META, volumeContext, volumeFacts } from "./volume-view.js";

const BLOCK: Capability = { accessType: "block", mode: "SINGLE_NODE_WRITER" };
const MOUNT: Capability = { accessType: "mount", mode: "SINGLE_NODE_WRITER", fsType: "", mountFlags: [] };

function volume(caps: Capability[], meta: Record<string, string> = {}): EngineVolume {
  return {
    name: "v",
    id: 1,
    sizeBytes: 1 << 20,
    createdAt: new Date(0),
    meta: { [META.capabilities]: serializeCapabilities(caps), [META.fsType]: "xfs", ...meta },
  };
}
const facts = (caps: Capability[], meta: Record<string, string> = {}) => volumeFacts(volume(caps, meta));
const code = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    return (err as { status?: string; code: string }).status ?? (err as { code: string }).code;
  }
  return "no error";
};

describe("volume mode", () => {
  it("tells what a volume holds from its capabilities and its use", () => {
    expect(volumeDataMode(facts([BLOCK]))).toEqual({ kind: "block" });
    expect(volumeDataMode(facts([MOUNT]))).toEqual({ kind: "filesystem", fsType: "xfs" });
    expect(volumeDataMode(facts([MOUNT], { [META.rawUse]: "true" }))).toEqual({
      kind: "filesystem",
      fsType: "xfs",
    });
    expect(volumeDataMode(facts([BLOCK, MOUNT]))).toBeUndefined();
    expect(volumeDataMode(facts([BLOCK, MOUNT], { [META.rawUse]: "true" }))).toEqual({ kind: "block" });
    for (const mode of [{ kind: "block" as const }, { kind: "filesystem" as const, fsType: "ext4" as const }])
      expect(parseDataMode(formatDataMode(mode))).toEqual(mode);
    expect(parseDataMode("")).toBeUndefined();
  });

  it("gives a block volume no filesystem in its context", () => {
    expect(volumeContext(volume([BLOCK]))).toEqual({ "snapblock.dev/volumeMode": "block" });
    expect(volumeContext(volume([MOUNT]))).toEqual({
      "snapblock.dev/volumeMode": "filesystem",
      "snapblock.dev/fsType": "xfs",
    });
  });

  it("inherits the source's filesystem and refuses another mode without the opt-in", () => {
    const base = { source: "snapshot local/s", requestedFsType: undefined, allowModeChange: false };
    const xfs = { kind: "filesystem" as const, fsType: "xfs" as const };
    expect(inheritFromSource({ ...base, mode: xfs, capabilities: [MOUNT] })).toBe("xfs");
    expect(inheritFromSource({ ...base, mode: undefined, capabilities: [MOUNT] })).toBeUndefined();
    expect(inheritFromSource({ ...base, mode: { kind: "block" }, capabilities: [BLOCK] })).toBeUndefined();
    expect(() => inheritFromSource({ ...base, mode: { kind: "block" }, capabilities: [MOUNT] })).toThrow(
      /holds raw block data.*volumeMode: Block.*allowModeChange/,
    );
    expect(() => inheritFromSource({ ...base, mode: xfs, capabilities: [BLOCK] })).toThrow(
      /holds an xfs filesystem.*raw block access/,
    );
    expect(() =>
      inheritFromSource({ ...base, mode: xfs, capabilities: [MOUNT], requestedFsType: "ext4" }),
    ).toThrow(/ask for xfs/);
    expect(
      inheritFromSource({ ...base, mode: { kind: "block" }, capabilities: [MOUNT], allowModeChange: true }),
    ).toBeUndefined();
  });

  it("stages only in the access type the volume was made for", () => {
    expect(code(() => planStage(facts([MOUNT]), "local/v", BLOCK))).toBe("FAILED_PRECONDITION");
    expect(code(() => planStage(facts([BLOCK]), "local/v", MOUNT))).toBe("FAILED_PRECONDITION");
    expect(code(() => checkAccessType(facts([MOUNT]), "local/v", BLOCK, "published"))).toBe(
      "FAILED_PRECONDITION",
    );
    expect(code(() => planStage(facts([MOUNT], { [META.allowModeChange]: "true" }), "local/v", BLOCK))).toBe(
      "no error",
    );
  });

  it("formats only a volume known to be new", () => {
    expect(planStage(facts([MOUNT]), "local/v", MOUNT)).toEqual({ markRawUse: false });
    expect(planStage(facts([BLOCK, MOUNT]), "local/v", BLOCK)).toEqual({ markRawUse: true });
    expect(planStage(facts([BLOCK], { [META.rawUse]: "true" }), "local/v", BLOCK)).toEqual({
      markRawUse: false,
    });
    expect(
      planStage(facts([MOUNT], { [META.source]: "snapshot:local/s" }), "local/v", MOUNT).refuseFormat,
    ).toMatch(/restored from snapshot local\/s/);
    expect(
      planStage(facts([MOUNT], { [META.source]: "volume:local/w" }), "local/v", MOUNT).refuseFormat,
    ).toMatch(/cloned from volume local\/w/);
    expect(
      planStage(facts([BLOCK, MOUNT], { [META.rawUse]: "true" }), "local/v", MOUNT).refuseFormat,
    ).toMatch(/used as a raw block device.*allowModeChange/);
    expect(
      planStage(
        facts([MOUNT], { [META.source]: "snapshot:local/s", [META.allowModeChange]: "true" }),
        "local/v",
        MOUNT,
      ),
    ).toEqual({ markRawUse: false });
  });
});
