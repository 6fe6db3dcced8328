import { describe, expect, it } from "vitest";
import { DEFAULT_METRICS_ADDRESS, parseMetricsAddress } from "./metrics-address.js";

describe("parseMetricsAddress", () => {
  it("parses HOST:PORT, [v6]:PORT and none", () => {
    expect(parseMetricsAddress(DEFAULT_METRICS_ADDRESS)).toEqual({ host: "127.0.0.1", port: 9808 });
    expect(parseMetricsAddress("0.0.0.0:0")).toEqual({ host: "0.0.0.0", port: 0 });
    expect(parseMetricsAddress("[::1]:9000")).toEqual({ host: "::1", port: 9000 });
    expect(parseMetricsAddress("localhost:80")).toEqual({ host: "localhost", port: 80 });
    expect(parseMetricsAddress("none")).toBeUndefined();
  });

  it.each(["9808", ":9808", "host:", "host:65536", "::1:80", "a:b"])("rejects %s", (text) => {
    expect(() => parseMetricsAddress(text)).toThrow(/HOST:PORT/);
  });
});
