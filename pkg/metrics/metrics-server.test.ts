import { Counter } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { createMetricsRegistry } from "./metrics-registry.js";
import { startMetricsServer, type MetricsServer } from "./metrics-server.js";

let server: MetricsServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

describe("startMetricsServer", () => {
  it("serves the registry and Node default metrics at /metrics on the port it got", async () => {
    const registry = createMetricsRegistry();
    new Counter({ name: "snapblock_test_events_total", help: "test", registers: [registry] }).inc(3);
    server = await startMetricsServer({
      registry,
      host: "127.0.0.1",
      port: 0,
      onError: (err) => {
        throw err;
      },
    });
    expect(server.address.port).toBeGreaterThan(0);
    const base = `http://127.0.0.1:${server.address.port}`;
    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const body = await res.text();
    expect(body).toContain("snapblock_test_events_total 3");
    expect(body).toContain("process_cpu_seconds_total");
    expect(body).toContain("nodejs_eventloop_lag_seconds");
    expect((await fetch(`${base}/`)).status).toBe(404);
    expect((await fetch(`${base}/metrics`, { method: "POST" })).status).toBe(405);
  });

  it("answers 500 and reports when collecting fails", async () => {
    const registry = createMetricsRegistry({ defaultMetrics: false });
    new Counter({
      name: "snapblock_test_broken_total",
      help: "test",
      registers: [registry],
      collect() {
        throw new Error("broken collect");
      },
    });
    const errors: unknown[] = [];
    server = await startMetricsServer({
      registry,
      host: "127.0.0.1",
      port: 0,
      onError: (e) => errors.push(e),
    });
    expect((await fetch(`http://127.0.0.1:${server.address.port}/metrics`)).status).toBe(500);
    expect(String(errors[0])).toMatch(/broken collect/);
  });

  it("reports a port already in use", async () => {
    const registry = createMetricsRegistry({ defaultMetrics: false });
    server = await startMetricsServer({ registry, host: "127.0.0.1", port: 0, onError: () => undefined });
    await expect(
      startMetricsServer({
        registry,
        host: "127.0.0.1",
        port: server.address.port,
        onError: () => undefined,
      }),
    ).rejects.toThrow(/listening for metrics/);
  });
});
