import { describe, expect, it } from "vitest";
import { exportUri } from "./nbd-uri.js";
import { resolveLimits } from "./limits.js";
import { matchMetaContexts } from "./meta-context.js";
import { encodeExportNameReply, encodeGreeting, encodeOptionReply, encodeString } from "./option-reply.js";
import { encodeBlockStatus, encodeSimpleReply, encodeStructuredError } from "./transmission-reply.js";

describe("wire encoders", () => {
  it("encode the greeting and option replies byte for byte", () => {
    expect(encodeGreeting().toString("hex")).toBe("4e42444d4147494349484156454f50540003");
    expect(encodeOptionReply(7, 1).toString("hex")).toBe("0003e889045565a9000000070000000100000000");
    expect(encodeExportNameReply(512, 0x0123, true).toString("hex")).toBe("00000000000002000123");
    expect(encodeExportNameReply(512, 0x0123, false).length).toBe(134);
  });

  it("encode simple, error and block status replies", () => {
    const handle = Buffer.from("0102030405060708", "hex");
    expect(encodeSimpleReply(handle, 22).toString("hex")).toBe("67446698000000160102030405060708");
    const error = encodeStructuredError(handle, 5, "oops");
    expect(error.toString("hex")).toBe(
      "668e33ef000180010102030405060708" + "0000000a" + "00000005" + "0004" + "6f6f7073",
    );
    const status = encodeBlockStatus(handle, 1, [{ length: 4096, flags: 3 }], true);
    expect(status.subarray(16).toString("hex")).toBe("0000000c" + "00000001" + "00001000" + "00000003");
  });

  it("cut over-long strings on a UTF-8 boundary", () => {
    const cut = encodeString("é".repeat(3000));
    expect(cut.length).toBe(4096);
    expect(cut.toString("utf8")).toBe("é".repeat(2048));
  });
});

describe("meta context matching", () => {
  it("follows proto.md for LIST and SET", () => {
    expect(matchMetaContexts([], "list")).toEqual(["base:allocation"]);
    expect(matchMetaContexts([], "set")).toEqual([]);
    expect(matchMetaContexts(["base:"], "list")).toEqual(["base:allocation"]);
    expect(matchMetaContexts(["base:"], "set")).toEqual([]);
    expect(matchMetaContexts(["base:allocation", "base:allocation", "qemu:x"], "set")).toEqual([
      "base:allocation",
    ]);
  });
});

describe("exportUri", () => {
  it("builds the URIs clients take", () => {
    expect(exportUri({ kind: "unix", socketPath: "/run/snapblock/vol 1.sock" }, "vol 1")).toBe(
      "nbd+unix:///vol%201?socket=/run/snapblock/vol%201.sock",
    );
    expect(exportUri({ kind: "tcp", host: "::1", port: 10809 }, "v")).toBe("nbd://[::1]:10809/v");
    // "?" in an export name must not end the path; "/" stays literal (libnbd reads it so).
    expect(exportUri({ kind: "unix", socketPath: "/run/a b.sock" }, "vol/1?x")).toBe(
      "nbd+unix:///vol/1%3Fx?socket=/run/a%20b.sock",
    );
  });
});

describe("resolveLimits", () => {
  it("fills defaults and rejects nonsense", () => {
    expect(resolveLimits({ maxInFlightRequests: 4 }).maxInFlightRequests).toBe(4);
    expect(() => resolveLimits({ maxInFlightRequests: 0 })).toThrow(/positive integer/);
    expect(() => resolveLimits({ maxPayloadBytes: 1000 })).toThrow(/multiple of 512/);
  });
});
