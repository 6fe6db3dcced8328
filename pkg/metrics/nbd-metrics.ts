import { Counter, Gauge, type Registry } from "prom-client";
import type { NbdObserver, NbdStats } from "../nbd/index.js";
import { IO_SECONDS_BUCKETS } from "./latency-buckets.js";
import { TallyCounter, TallyHistogram, type CounterSeries, type HistogramSeries } from "./tally.js";

export interface NbdMetricsOptions {
  registry: Registry;
  /** The server's point-in-time counters (NbdServer.stats()), read at scrape time. */
  stats: () => NbdStats;
}

/**
 * The NBD server's metrics: counters and a latency histogram fed by its NbdObserver hooks, the
 * gauges (exports, connections, requests in flight) read from stats() at scrape time. Labels are
 * the protocol's own bounded sets (command, errno, protocol error kind), never the export name:
 * per-volume figures come from the engine's per-volume series.
 */
export class NbdMetrics {
  readonly observer: NbdObserver;

  constructor(options: NbdMetricsOptions) {
    const registers = [options.registry];
    const gauge = (name: string, help: string, read: (s: NbdStats) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read(options.stats()));
        },
      });
    gauge("snapblock_nbd_exports", "NBD exports being served.", (s) => s.exports);
    gauge("snapblock_nbd_connections", "Open NBD client connections.", (s) => s.connections);
    gauge(
      "snapblock_nbd_requests_in_flight",
      "NBD requests received and not yet answered.",
      (s) => s.inFlightRequests,
    );
    const connections = new Counter({
      name: "snapblock_nbd_connections_opened_total",
      help: "NBD client connections accepted.",
      registers,
    });
    // Every request adds to these (tally.ts: plain numbers, read when scraped).
    const requests = new TallyCounter({
      name: "snapblock_nbd_requests_total",
      help: "NBD requests answered, by command (failed ones included).",
      labelNames: ["command"],
      registers,
    });
    const requestErrors = new Counter({
      name: "snapblock_nbd_request_errors_total",
      help: "NBD requests answered with an error, by command and errno.",
      labelNames: ["command", "error"],
      registers,
    });
    const protocolErrors = new Counter({
      name: "snapblock_nbd_protocol_errors_total",
      help: "Clients disconnected for breaking the protocol or a limit, by kind.",
      labelNames: ["kind"],
      registers,
    });
    const readBytes = new TallyCounter({
      name: "snapblock_nbd_read_bytes_total",
      help: "Payload bytes of successful NBD reads.",
      registers,
    }).series({});
    const writtenBytes = new TallyCounter({
      name: "snapblock_nbd_written_bytes_total",
      help: "Payload bytes of successful NBD writes.",
      registers,
    }).series({});
    const seconds = new TallyHistogram({
      name: "snapblock_nbd_request_duration_seconds",
      help: "Time from receiving an NBD request to sending its reply, by command.",
      labelNames: ["command"],
      buckets: IO_SECONDS_BUCKETS,
      registers,
    });
    const byCommand = new Map<string, { requests: CounterSeries; seconds: HistogramSeries }>();
    const commandSeries = (command: string) => {
      let series = byCommand.get(command);
      if (series === undefined) {
        series = { requests: requests.series({ command }), seconds: seconds.series({ command }) };
        byCommand.set(command, series);
      }
      return series;
    };
    this.observer = {
      connectionOpened: () => connections.inc(),
      requestCompleted: (e) => {
        const series = commandSeries(e.command);
        series.requests.value++;
        series.seconds.observe(e.durationMs / 1000);
        if (e.error !== null) requestErrors.inc({ command: e.command, error: e.error });
        else if (e.command === "read") readBytes.value += e.bytes;
        else if (e.command === "write") writtenBytes.value += e.bytes;
      },
      protocolError: (e) => protocolErrors.inc({ kind: e.kind }),
    };
  }
}
