import { describe, expect, it } from "vitest";
import type { DataPathAttachment } from "./data-path.js";
import { volumeUse } from "./volume-state.js";

const attached = (extra: Partial<DataPathAttachment> = {}): DataPathAttachment => ({
  engineName: "data",
  health: "ok",
  problems: [],
  devicePath: "/dev/loop3",
  filesystemMounts: [],
  deviceBindMounts: [],
  ...extra,
});
const exported = {
  kind: "volume" as const,
  engineName: "data",
  exportName: "volume/data",
  socketPath: "/d/exports/volume-data.sock",
  uri: "nbd+unix:///volume/data?socket=/d/exports/volume-data.sock",
  readOnly: false,
};

describe("volume state", () => {
  it("is detached with nothing, exported with only an export", () => {
    expect(volumeUse({ filesystem: true, attachment: undefined, export: undefined })).toBeUndefined();
    expect(volumeUse({ filesystem: true, attachment: undefined, export: exported })?.state).toBe("exported");
  });

  it("follows a filesystem volume through attach, stage and publish", () => {
    const at = (mounts: string[]) =>
      volumeUse({ filesystem: true, attachment: attached({ filesystemMounts: mounts }), export: undefined });
    expect(at([])?.state).toBe("attached");
    expect(at(["/k/staging/data"])).toMatchObject({ state: "staged", mountPoints: ["/k/staging/data"] });
    expect(at(["/k/staging/data", "/k/pods/p/vol"])?.state).toBe("published");
  });

  it("calls an attached raw block volume staged, and published once its device is bound", () => {
    expect(volumeUse({ filesystem: false, attachment: attached(), export: undefined })?.state).toBe("staged");
    expect(
      volumeUse({
        filesystem: false,
        attachment: attached({ deviceBindMounts: ["/k/dev"] }),
        export: undefined,
      }),
    ).toMatchObject({ state: "published", devicePath: "/dev/loop3", mountPoints: ["/k/dev"] });
  });

  it("says why a broken attachment is broken and what to do", () => {
    const broken = volumeUse({
      filesystem: true,
      attachment: attached({ health: "broken", problems: ["nbdfuse (pid 42) is not running"] }),
      export: undefined,
    });
    expect(broken).toMatchObject({ state: "broken" });
    expect(broken?.reason).toMatch(/^nbdfuse \(pid 42\) is not running; detach it and attach it again/);
  });
});
