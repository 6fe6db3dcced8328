import { describe, expect, it } from "vitest";
import type { EngineVolume } from "../engine-api/index.js";
import { volumeCondition } from "./volume-view.js";

const volume = (extra: Partial<EngineVolume> = {}): EngineVolume => ({
  name: "data",
  id: 1,
  sizeBytes: 4096,
  createdAt: new Date(0),
  meta: {},
  ...extra,
});

describe("the volume condition of ControllerGetVolume and ListVolumes", () => {
  it("is abnormal while the volume's block device on its node is broken, and says what to do", () => {
    expect(volumeCondition(volume())).toEqual({ abnormal: false, message: "volume is healthy" });
    const broken = volumeCondition(volume({ attachmentProblem: "the NBD connection died" }));
    expect(broken.abnormal).toBe(true);
    expect(broken.message).toMatch(
      /broken.*the NBD connection died.*unstage it, then stage and publish it again/,
    );
  });
});
