import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import { asSnapblockError } from "../errors/index.js";
import type { MetricsAddress } from "./metrics-address.js";

export interface MetricsServerOptions extends MetricsAddress {
  registry: Registry;
  /** A scrape that failed (a collect callback threw): answered 500 and reported here. */
  onError: (err: unknown) => void;
}

export interface MetricsServer {
  /** The address actually bound (the real port when 0 was asked for). */
  readonly address: MetricsAddress;
  close(): Promise<void>;
}

/** A node:http request handler that serves the registry at GET /metrics and 404 elsewhere. */
export function metricsHandler(
  registry: Registry,
  onError: (err: unknown) => void,
): (req: http.IncomingMessage, res: http.ServerResponse) => void {
  return (req, res) => {
    const url = new URL(req.url ?? "/", "http://metrics");
    if (url.pathname !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found: metrics are at /metrics\n");
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" }).end("use GET\n");
      return;
    }
    registry.metrics().then(
      (body) => {
        res.writeHead(200, { "content-type": registry.contentType });
        res.end(req.method === "HEAD" ? undefined : body);
      },
      (err: unknown) => {
        onError(err);
        res.writeHead(500, { "content-type": "text/plain" }).end("collecting metrics failed\n");
      },
    );
  };
}

/** Serves /metrics on its own plain HTTP listener (Prometheus scrapes it; nothing else is served). */
export async function startMetricsServer(options: MetricsServerOptions): Promise<MetricsServer> {
  const server = http.createServer(metricsHandler(options.registry, options.onError));
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) =>
      reject(asSnapblockError(err, `listening for metrics on ${options.host}:${options.port}`)),
    );
    server.listen({ host: options.host, port: options.port }, resolve);
  });
  const bound = server.address() as AddressInfo;
  return {
    address: { host: options.host, port: bound.port },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        // Prometheus keeps its scrape connection alive; without this close() waits for its timeout.
        server.closeAllConnections();
      }),
  };
}
