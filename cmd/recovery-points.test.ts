import { describe, expect, it } from "vitest";
import { kubernetesObjects, parsePointRef, parseTime } from "./recovery-points.js";
import { UsageError } from "./usage-error.js";

describe("point references", () => {
  it("reads VOLUME_ID@TIME with a zone, and leaves snapshot ids alone", () => {
    expect(parsePointRef("local/data@2026-11-30T15:04:05Z")).toEqual({
      volumeId: "local/data",
      atMs: Date.UTC(2026, 10, 30, 15, 4, 5),
    });
    expect(parsePointRef("local/data@2026-11-30T16:04:05.250+01:00")?.atMs).toBe(
      Date.UTC(2026, 10, 30, 15, 4, 5, 250),
    );
    expect(parsePointRef("local/snap-1")).toBeUndefined();
  });

  it("refuses times without a zone or that are not times, and a missing volume", () => {
    expect(() => parseTime("2026-11-30T15:04:05", "(--at)")).toThrow(UsageError);
    expect(() => parseTime("yesterday", "(--at)")).toThrow(/RFC 3339 with a zone/);
    expect(() => parseTime("2026-13-45T99:00:00Z", "(--at)")).toThrow(/not a time/);
    expect(() => parsePointRef("@2026-11-30T15:04:05Z")).toThrow(/names no volume/);
  });
});

describe("kubernetesObjects", () => {
  const point = {
    snapshotId: "node-1/rp--7-1796051045000",
    time: new Date(1796051045000),
    sizeBytes: 1 << 20,
  };

  it("binds a Delete VolumeSnapshotContent naming the (pinned) point to its VolumeSnapshot", () => {
    const yaml = kubernetesObjects({ point, driver: "csi.snapblock.dev", namespace: "apps" });
    const name = "point-rp--7-1796051045000-20261130t150405z";
    expect(yaml).toContain(`  name: "${name}-content"\nspec:\n  deletionPolicy: Delete`);
    expect(yaml).toContain('    snapshotHandle: "node-1/rp--7-1796051045000"');
    expect(yaml).toContain(`  volumeSnapshotRef:\n    name: "${name}"\n    namespace: "apps"`);
    expect(yaml).toContain(`    volumeSnapshotContentName: "${name}-content"`);
  });

  it("refuses a name Kubernetes would refuse", () => {
    expect(() => kubernetesObjects({ point, driver: "d", namespace: "default", name: "Not_Valid" })).toThrow(
      /not a Kubernetes object name/,
    );
  });
});
