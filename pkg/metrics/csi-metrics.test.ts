import { describe, expect, it } from "vitest";
import { CsiMetrics } from "./csi-metrics.js";
import { createMetricsRegistry } from "./metrics-registry.js";
import { sampleValue } from "./test-samples.js";

describe("CsiMetrics", () => {
  it("counts calls by method and code, times them and tracks calls in flight", async () => {
    const registry = createMetricsRegistry({ defaultMetrics: false });
    const { observer } = new CsiMetrics({ registry });
    observer.callStarted?.({ method: "CreateVolume" });
    observer.callStarted?.({ method: "CreateVolume" });
    expect(await sampleValue(registry, "snapblock_csi_calls_in_flight", { method: "CreateVolume" })).toBe(2);
    observer.callFinished?.({ method: "CreateVolume", code: "OK", seconds: 0.02 });
    observer.callFinished?.({ method: "CreateVolume", code: "INVALID_ARGUMENT", seconds: 0.001 });
    expect(await sampleValue(registry, "snapblock_csi_calls_in_flight", { method: "CreateVolume" })).toBe(0);
    expect(
      await sampleValue(registry, "snapblock_csi_calls_total", { method: "CreateVolume", code: "OK" }),
    ).toBe(1);
    expect(
      await sampleValue(registry, "snapblock_csi_call_duration_seconds_count", {
        method: "CreateVolume",
        code: "INVALID_ARGUMENT",
      }),
    ).toBe(1);
  });
});
