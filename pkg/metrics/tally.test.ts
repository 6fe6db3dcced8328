import { Counter, Histogram, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { IO_SECONDS_BUCKETS } from "./latency-buckets.js";
import { TallyCounter, TallyHistogram } from "./tally.js";

/** What Prometheus reads. */
async function text(registry: Registry): Promise<string> {
  return registry.metrics();
}

/** The registry's JSON form, each sample's labels as strings (prom-client keeps `le` a number). */
async function json(registry: Registry): Promise<unknown> {
  return (await registry.getMetricsAsJSON()).map((m) => ({
    name: m.name,
    help: m.help,
    type: m.type,
    values: m.values.map((v) => ({
      name: (v as { metricName?: string }).metricName,
      value: v.value,
      labels: Object.fromEntries(Object.entries(v.labels).map(([k, l]) => [k, String(l)])),
    })),
  }));
}

describe("tally metrics", () => {
  it("expose what prom-client's Counter and Histogram expose for the same observations", async () => {
    const theirs = new Registry();
    const ours = new Registry();
    const counter = { name: "t_ops_total", help: "Operations.", labelNames: ["pool", "op"] };
    const histogram = { ...counter, name: "t_seconds", help: "Latency.", buckets: IO_SECONDS_BUCKETS };
    const pc = new Counter({ ...counter, registers: [theirs] });
    const ph = new Histogram({ ...histogram, registers: [theirs] });
    const tc = new TallyCounter({ ...counter, registers: [ours] });
    const th = new TallyHistogram({ ...histogram, registers: [ours] });
    // Values on and between the bounds, below the first and above the last, for two series;
    // a label value that needs escaping.
    const values = [0, 0.00005, 0.0001, 0.00010001, 0.003, 0.25, 2.5, 2.6, 100];
    for (const [i, op] of ["read", 'wr"ite'].entries()) {
      const labels = { pool: "p\\1", op };
      const series = { c: tc.series(labels), h: th.series(labels) };
      for (const v of values.slice(i)) {
        pc.inc(labels, 3);
        series.c.value += 3;
        ph.observe(labels, v);
        series.h.observe(v);
      }
    }
    expect(await text(ours)).toBe(await text(theirs));
    expect(await json(ours)).toEqual(await json(theirs));
    // A removed series goes from the output; the same labels later start a new one at zero.
    pc.remove({ pool: "p\\1", op: "read" });
    ph.remove({ pool: "p\\1", op: "read" });
    th.remove({ pool: "p\\1", op: "read" });
    tc.remove({ pool: "p\\1", op: "read" });
    expect(await text(ours)).toBe(await text(theirs));
    expect(tc.series({ pool: "p\\1", op: "read" }).value).toBe(0);
    ours.resetMetrics();
    theirs.resetMetrics();
    expect(await text(ours)).toBe(await text(theirs));
  });

  it("refuses labels that are not the metric's, like prom-client", () => {
    const registry = new Registry();
    const c = new TallyCounter({ name: "x_total", help: "x", labelNames: ["a"], registers: [registry] });
    expect(() => c.series({})).toThrow(/label "a" missing/);
    expect(() => c.series({ a: "1", b: "2" })).toThrow(/are not a/);
    expect(
      () => new TallyHistogram({ name: "y", help: "y", buckets: [1, 1], registers: [registry] }),
    ).toThrow(/increase/);
  });
});
