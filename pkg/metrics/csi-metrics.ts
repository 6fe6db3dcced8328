import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { CALL_SECONDS_BUCKETS } from "./latency-buckets.js";
import type { CallObserver } from "../rpc/index.js";

export interface CsiMetricsOptions {
  registry: Registry;
}

/**
 * CSI RPC metrics, fed by the one call wrapper of pkg/csi. Labels are the method and the gRPC
 * status code name: both bounded sets (the CSI proto's methods, gRPC's 17 codes).
 */
export class CsiMetrics {
  readonly observer: CallObserver;

  constructor(options: CsiMetricsOptions) {
    const registers = [options.registry];
    const calls = new Counter({
      name: "snapblock_csi_calls_total",
      help: "CSI RPCs answered, by method and gRPC status code.",
      labelNames: ["method", "code"],
      registers,
    });
    const seconds = new Histogram({
      name: "snapblock_csi_call_duration_seconds",
      help: "Duration of CSI RPCs, by method and gRPC status code.",
      labelNames: ["method", "code"],
      buckets: CALL_SECONDS_BUCKETS,
      registers,
    });
    const inFlight = new Gauge({
      name: "snapblock_csi_calls_in_flight",
      help: "CSI RPCs being handled, by method.",
      labelNames: ["method"],
      registers,
    });
    this.observer = {
      callStarted: (e) => inFlight.inc({ method: e.method }),
      callFinished: (e) => {
        inFlight.dec({ method: e.method });
        calls.inc({ method: e.method, code: e.code });
        seconds.observe({ method: e.method, code: e.code }, e.seconds);
      },
    };
  }
}
