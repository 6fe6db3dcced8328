import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { dashboardQueries, metricNamesOf } from "./dashboard-queries.js";
import { CsiMetrics } from "./csi-metrics.js";
import { EngineMetrics } from "./engine-metrics.js";
import { createMetricsRegistry } from "./metrics-registry.js";
import { NbdMetrics } from "./nbd-metrics.js";

const DASHBOARD = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  "../../charts/snapblock/dashboards/snapblock.json",
);

/** Every series name a full registry can expose (histograms as _bucket, _sum and _count). */
async function exposedNames(): Promise<Set<string>> {
  const registry = createMetricsRegistry();
  new EngineMetrics({ registry, pool: "p", stats: () => undefined });
  new NbdMetrics({
    registry,
    stats: () => ({
      exports: 0,
      connections: 0,
      inFlightRequests: 0,
      requests: {},
      requestErrors: {},
      protocolErrors: {},
      bytesRead: 0,
      bytesWritten: 0,
    }),
  });
  new CsiMetrics({ registry });
  const names = new Set<string>();
  for (const m of await registry.getMetricsAsJSON()) {
    names.add(m.name);
    if (String(m.type) === "histogram") for (const s of ["_bucket", "_sum", "_count"]) names.add(m.name + s);
  }
  return names;
}

describe("the Grafana dashboard", () => {
  const dashboard: unknown = JSON.parse(readFileSync(DASHBOARD, "utf8"));
  const queries = dashboardQueries(dashboard);

  it("takes its data source from the DS_PROMETHEUS variable", () => {
    const text = readFileSync(DASHBOARD, "utf8");
    expect(text).toContain('"uid": "${DS_PROMETHEUS}"');
    expect(text).not.toMatch(/"uid": "(?!\$\{DS_PROMETHEUS\}|snapblock")/);
  });

  it("has the panels the issue asks for", () => {
    const titles = queries.map((q) => q.panel);
    for (const t of [
      "Pool capacity",
      "Overcommit",
      "Throughput per volume",
      "IOPS per volume",
      "Engine latency percentiles",
      "Snapshot count",
      "Space held exclusively by snapshots",
      "ROW redirects",
      "CSI error rate",
      "Copies in progress",
      "Top volumes by snapshot space",
      "Pool usage",
      "Snapshots per volume",
      "Recovery points per volume",
      "Protection lag",
      "Recovery points dropped for space",
    ]) {
      expect(titles).toContain(t);
    }
  });

  it("queries only metrics that pkg/metrics registers", async () => {
    const exposed = await exposedNames();
    expect(queries.length).toBeGreaterThan(20);
    for (const q of queries) {
      const names = metricNamesOf(q.expr);
      expect(names.length, `${q.panel}: no metric in ${q.expr}`).toBeGreaterThan(0);
      for (const name of names) expect(exposed.has(name), `${q.panel}: ${name} is not registered`).toBe(true);
    }
  });

  it("extracts metric names from PromQL and nothing else", () => {
    expect(
      metricNamesOf(
        'histogram_quantile(0.99, sum by (le, op) (rate(a_seconds_bucket{pool=~"$pool", x="rate(y)"}[$__rate_interval]))) / on (pool) b offset 5m',
      ),
    ).toEqual(["a_seconds_bucket", "b"]);
    expect(metricNamesOf('label_values(c_bytes{job=~"$job"}, pool)')).toEqual(["c_bytes"]);
    expect(metricNamesOf("-sum without (volume) (d_total) > bool 0 and e")).toEqual(["d_total", "e"]);
  });
});
