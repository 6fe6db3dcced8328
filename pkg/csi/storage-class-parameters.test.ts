import { describe, expect, it } from "vitest";
import { parseByteQuantity } from "./byte-quantity.js";
import { parseVolumeParameters } from "./storage-class-parameters.js";

describe("snapshot limit parameters", () => {
  it("reads counts and byte quantities as Kubernetes writes them", () => {
    expect(
      parseVolumeParameters({ "snapblock.dev/maxSnapshots": "24", "snapblock.dev/maxSnapshotSpace": "10Gi" }),
    ).toEqual({ fullCopy: false, allowModeChange: false, maxSnapshots: 24, maxSnapshotBytes: 10 * 2 ** 30 });
    expect(parseByteQuantity("1073741824", "f")).toBe(2 ** 30);
    expect(parseByteQuantity("1.5Ki", "f")).toBe(1536);
    expect(parseByteQuantity("500M", "f")).toBe(500e6);
  });

  it("refuses what is not a limit, naming the parameter", () => {
    for (const bad of ["0", "-1", "1.5", "1e3", "", "100001"])
      expect(() => parseVolumeParameters({ "snapblock.dev/maxSnapshots": bad })).toThrow(/maxSnapshots/);
    for (const bad of ["0", "10 GB", "1.5", "Gi", "-1Gi", "1Ei"])
      expect(() => parseVolumeParameters({ "snapblock.dev/maxSnapshotSpace": bad })).toThrow(
        /maxSnapshotSpace/,
      );
  });
});
