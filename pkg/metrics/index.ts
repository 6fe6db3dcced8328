/**
 * pkg/metrics: snapblock's Prometheus metrics (prom-client) and the /metrics endpoint. The engine,
 * the NBD server and the CSI services expose observer hooks of their own and import no Prometheus
 * library; the classes here implement those hooks and read their stats() at scrape time. Names
 * follow `snapblock_<subsystem>_<name>_<unit>`; see docs/metrics.md. This is the module's only
 * entry point.
 */
export { createMetricsRegistry, type MetricsRegistryOptions } from "./metrics-registry.js";
export { EngineMetrics, DEFAULT_DEVICE_SERIES, type EngineMetricsOptions } from "./engine-metrics.js";
export { NbdMetrics, type NbdMetricsOptions } from "./nbd-metrics.js";
export { CsiMetrics, type CsiMetricsOptions } from "./csi-metrics.js";
export { AttachmentMetrics, type AttachmentMetricsOptions } from "./attachment-metrics.js";
export { ReplicationMetrics, type ReplicationMetricsOptions } from "./replication-metrics.js";
export { OVERFLOW_LABEL } from "./series-limit.js";
export { dashboardQueries, metricNamesOf, type DashboardQuery } from "./dashboard-queries.js";
export { DEFAULT_METRICS_ADDRESS, parseMetricsAddress, type MetricsAddress } from "./metrics-address.js";
export {
  metricsHandler,
  startMetricsServer,
  type MetricsServer,
  type MetricsServerOptions,
} from "./metrics-server.js";
export type { Registry } from "prom-client";
