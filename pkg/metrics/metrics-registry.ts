import { Registry, collectDefaultMetrics } from "prom-client";

export interface MetricsRegistryOptions {
  /** Node.js process metrics (CPU, memory, event loop lag, GC); default true. */
  defaultMetrics?: boolean;
}

/**
 * One registry per process, never prom-client's global one: tests and embedders can build
 * several side by side, and nothing registers into a registry it was not handed.
 */
export function createMetricsRegistry(options: MetricsRegistryOptions = {}): Registry {
  const registry = new Registry();
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  return registry;
}
