import { describe, expect, it } from "vitest";
import { createMetricsRegistry } from "./metrics-registry.js";
import { ReplicationMetrics } from "./replication-metrics.js";

describe("replication metrics", () => {
  it("reports replicas per snapshot within the series cap, totals, repairs and lag", async () => {
    const registry = createMetricsRegistry();
    const m = new ReplicationMetrics({ registry, maxSnapshotSeries: 2 });
    m.observer.replicaCounts([
      { origin: "a/s1", wanted: 2, complete: 2 },
      { origin: "a/s2", wanted: 1, complete: 0 },
      { origin: "b/s3", wanted: 1, complete: 1 },
    ]);
    m.observer.shortfall();
    m.observer.repaired({ added: ["c:a/s2"], dropped: [], deleted: ["a/x", "b/y"], redirected: [] });
    m.observer.replicated({ origin: "a/s1", seconds: 12 });
    let text = await registry.metrics();
    expect(text).toMatch(/snapblock_snapshot_replicas_wanted\{snapshot="a\/s1"\} 2/);
    expect(text).toMatch(/snapblock_snapshot_replicas_complete\{snapshot="a\/s2"\} 0/);
    expect(text).not.toMatch(/snapshot="b\/s3"/); // past the cap
    expect(text).toMatch(/snapblock_replication_snapshots\{state="short"\} 1/);
    expect(text).toMatch(/snapblock_replication_snapshots\{state="complete"\} 2/);
    expect(text).toMatch(/snapblock_replication_shortfalls_total 1/);
    expect(text).toMatch(/snapblock_replication_repairs_total\{action="deleted"\} 2/);
    expect(text).toMatch(/snapblock_replication_seconds_count 1/);
    // A deleted snapshot's series go, and free a slot.
    m.observer.replicaCounts([
      { origin: "a/s2", wanted: 1, complete: 1 },
      { origin: "b/s3", wanted: 1, complete: 1 },
    ]);
    text = await registry.metrics();
    expect(text).not.toMatch(/snapshot="a\/s1"/);
    expect(text).toMatch(/snapblock_snapshot_replicas_complete\{snapshot="b\/s3"\} 1/);
  });
});
