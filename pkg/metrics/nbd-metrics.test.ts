import { describe, expect, it } from "vitest";
import type { NbdStats } from "../nbd/index.js";
import { createMetricsRegistry } from "./metrics-registry.js";
import { NbdMetrics } from "./nbd-metrics.js";
import { sampleValue } from "./test-samples.js";

const stats: NbdStats = {
  exports: 2,
  connections: 3,
  inFlightRequests: 4,
  requests: {},
  requestErrors: {},
  protocolErrors: {},
  bytesRead: 0,
  bytesWritten: 0,
};

describe("NbdMetrics", () => {
  it("reads gauges from stats() and counts requests, errors and protocol errors", async () => {
    const registry = createMetricsRegistry({ defaultMetrics: false });
    const { observer } = new NbdMetrics({ registry, stats: () => stats });
    observer.connectionOpened?.({ exportName: "v", connectionId: 1 });
    observer.requestCompleted?.({
      exportName: "v",
      command: "read",
      error: null,
      bytes: 4096,
      durationMs: 0.5,
    });
    observer.requestCompleted?.({
      exportName: "v",
      command: "write",
      error: null,
      bytes: 512,
      durationMs: 2,
    });
    observer.requestCompleted?.({
      exportName: "v",
      command: "write",
      error: "ENOSPC",
      bytes: 0,
      durationMs: 1,
    });
    observer.protocolError?.({ exportName: "v", connectionId: 1, kind: "bad_request_magic" });
    expect(await sampleValue(registry, "snapblock_nbd_exports")).toBe(2);
    expect(await sampleValue(registry, "snapblock_nbd_connections")).toBe(3);
    expect(await sampleValue(registry, "snapblock_nbd_requests_in_flight")).toBe(4);
    expect(await sampleValue(registry, "snapblock_nbd_connections_opened_total")).toBe(1);
    expect(await sampleValue(registry, "snapblock_nbd_requests_total", { command: "write" })).toBe(2);
    expect(
      await sampleValue(registry, "snapblock_nbd_request_errors_total", {
        command: "write",
        error: "ENOSPC",
      }),
    ).toBe(1);
    expect(
      await sampleValue(registry, "snapblock_nbd_protocol_errors_total", { kind: "bad_request_magic" }),
    ).toBe(1);
    expect(await sampleValue(registry, "snapblock_nbd_read_bytes_total")).toBe(4096);
    expect(await sampleValue(registry, "snapblock_nbd_written_bytes_total")).toBe(512);
    expect(
      await sampleValue(registry, "snapblock_nbd_request_duration_seconds_sum", { command: "write" }),
    ).toBe(0.003);
  });
});
