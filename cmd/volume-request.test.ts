import { describe, expect, it } from "vitest";
import { createVolumeRequest, planCreate, type CreateFlags } from "./volume-request.js";
import { VOLUME_VERBS } from "./volume-verbs.js";

const flags = (extra: Partial<CreateFlags> = {}): CreateFlags => ({
  block: false,
  "allow-mode-change": false,
  "full-copy": false,
  wait: false,
  ...extra,
});
const plan = (verb: "create" | "restore" | "clone", f: Partial<CreateFlags>, args: string[]) =>
  planCreate(VOLUME_VERBS[verb], verb, flags(f), args);
const refusal = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    return (err as Error).message.split("\n")[0];
  }
  return "accepted";
};

describe("volume create/restore/clone requests", () => {
  it("asks for the exact size, and leaves the mode of a restore to its source", () => {
    const restore = plan("restore", { size: "1G" }, ["local/snap", "copy"]);
    expect(restore).toEqual({
      name: "copy",
      source: { snapshot: { snapshotId: "local/snap" } },
      sizeBytes: 2 ** 30,
      parameters: {},
      wait: false,
    });
    expect(createVolumeRequest(restore, { kind: "block" })).toEqual({
      name: "copy",
      volumeCapabilities: [{ block: {}, accessMode: { mode: "SINGLE_NODE_WRITER" } }],
      parameters: {},
      capacityRange: { requiredBytes: 2 ** 30, limitBytes: 2 ** 30 },
      volumeContentSource: { snapshot: { snapshotId: "local/snap" } },
    });
  });

  it("reads modes, sources and options", () => {
    expect(plan("create", { fs: "xfs" }, ["data"]).mode).toEqual({ kind: "filesystem", fsType: "xfs" });
    expect(plan("clone", { block: true, "allow-mode-change": true }, ["local/a", "b"])).toMatchObject({
      mode: { kind: "block" },
      source: { volume: { volumeId: "local/a" } },
      parameters: { "snapblock.dev/allowModeChange": "true" },
    });
    expect(plan("create", { "from-volume": "local/a", "full-copy": true, wait: true }, ["b"])).toMatchObject({
      source: { volume: { volumeId: "local/a" } },
      parameters: { "snapblock.dev/fullCopy": "true" },
      wait: true,
    });
  });

  it("refuses contradictions with a sentence", () => {
    expect(refusal(() => plan("create", { block: true, fs: "ext4" }, ["d"]))).toMatch(/not both/);
    expect(refusal(() => plan("create", { fs: "ntfs" }, ["d"]))).toMatch(/"ntfs" is not a filesystem/);
    expect(refusal(() => plan("create", { "from-snapshot": "a", "from-volume": "b" }, ["d"]))).toMatch(
      /not both/,
    );
    expect(refusal(() => plan("create", { "full-copy": true }, ["d"]))).toMatch(/needs a source/);
    expect(refusal(() => plan("create", { "allow-mode-change": true }, ["d"]))).toMatch(/restore or clone/);
    expect(refusal(() => plan("restore", { wait: true }, ["s", "d"]))).toMatch(
      /--wait follows a --full-copy/,
    );
    expect(refusal(() => plan("create", { size: "-5G" }, ["d"]))).toMatch(/--size "-5G" is not a size/);
    expect(refusal(() => plan("create", { size: "1000" }, ["d"]))).toMatch(/512-byte sectors/);
  });
});
