import { SnapblockError } from "../errors/index.js";

export interface MetricsAddress {
  host: string;
  /** 0: any free port (the server reports the one it got). */
  port: number;
}

/** The usual port of CSI driver metrics endpoints (the CSI sidecars' convention). */
export const DEFAULT_METRICS_ADDRESS = "127.0.0.1:9808";

/**
 * Parses `HOST:PORT` (`[v6]:PORT` for IPv6) or `none`, which disables the endpoint (undefined).
 * Loopback is the default: metrics name volumes, and binding beyond the node is a choice.
 */
export function parseMetricsAddress(text: string): MetricsAddress | undefined {
  if (text === "none") return undefined;
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  const port = Number(match?.[3]);
  const host = match?.[1] ?? match?.[2];
  if (host === undefined || !(port >= 0 && port <= 65535)) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `metrics address ${JSON.stringify(text)}: use HOST:PORT (e.g. ${DEFAULT_METRICS_ADDRESS}, [::1]:9808, 0.0.0.0:9808) or none`,
    );
  }
  return { host, port };
}
