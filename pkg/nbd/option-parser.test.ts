import { describe, expect, it } from "vitest";
import {
  decodeString,
  parseInfoRequest,
  parseMetaContextRequest,
  parseOptionHeader,
} from "./option-parser.js";

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

function info(name: string, types: number[]): Buffer {
  const tail = Buffer.alloc(2 + 2 * types.length);
  tail.writeUInt16BE(types.length, 0);
  types.forEach((t, i) => tail.writeUInt16BE(t, 2 + 2 * i));
  return Buffer.concat([u32(Buffer.byteLength(name)), Buffer.from(name), tail]);
}

function meta(name: string, queries: string[]): Buffer {
  return Buffer.concat([
    u32(Buffer.byteLength(name)),
    Buffer.from(name),
    u32(queries.length),
    ...queries.flatMap((q) => [u32(Buffer.byteLength(q)), Buffer.from(q)]),
  ]);
}

describe("parseOptionHeader", () => {
  it("reads IHAVEOPT, option and length", () => {
    const frame = Buffer.concat([Buffer.from("IHAVEOPT"), u32(7), u32(12)]);
    expect(parseOptionHeader(frame)).toEqual({ magicOk: true, option: 7, length: 12 });
    expect(parseOptionHeader(Buffer.concat([Buffer.from("IHAVEOPX"), u32(7), u32(12)])).magicOk).toBe(false);
    expect(parseOptionHeader(Buffer.alloc(3)).magicOk).toBe(false);
  });
});

describe("parseInfoRequest", () => {
  it("parses name and information requests, dropping duplicates", () => {
    expect(parseInfoRequest(info("vol", [3, 1, 3]))).toEqual({
      ok: true,
      value: { name: "vol", infoTypes: [3, 1] },
    });
    expect(parseInfoRequest(info("", []))).toEqual({ ok: true, value: { name: "", infoTypes: [] } });
  });

  it("rejects lengths that do not add up", () => {
    expect(parseInfoRequest(Buffer.alloc(5)).ok).toBe(false);
    const tooLong = info("vol", []);
    tooLong.writeUInt32BE(4, 0);
    expect(parseInfoRequest(tooLong).ok).toBe(false);
    const countTooBig = info("vol", [1]);
    countTooBig.writeUInt16BE(2, 7);
    expect(parseInfoRequest(countTooBig).ok).toBe(false);
    expect(parseInfoRequest(Buffer.concat([info("vol", []), Buffer.alloc(1)])).ok).toBe(false);
  });

  it("rejects names that are not valid strings", () => {
    expect(parseInfoRequest(info("a\u0000b", [])).ok).toBe(false);
    const invalidUtf8 = Buffer.concat([u32(2), Buffer.from([0xc3, 0x28]), Buffer.alloc(2)]);
    expect(parseInfoRequest(invalidUtf8).ok).toBe(false);
    expect(parseInfoRequest(info("x".repeat(4097), [])).ok).toBe(false);
    expect(parseInfoRequest(info("é".repeat(2048), [])).ok).toBe(true);
  });
});

describe("parseMetaContextRequest", () => {
  it("parses export name and queries", () => {
    expect(parseMetaContextRequest(meta("vol", ["base:allocation", "x-a:b"]))).toEqual({
      ok: true,
      value: { exportName: "vol", queries: ["base:allocation", "x-a:b"] },
    });
    expect(parseMetaContextRequest(meta("", []))).toEqual({
      ok: true,
      value: { exportName: "", queries: [] },
    });
  });

  it("rejects counts and lengths that reach past the data, and trailing bytes", () => {
    const hugeCount = meta("vol", []);
    hugeCount.writeUInt32BE(0xffffffff, 7);
    expect(parseMetaContextRequest(hugeCount).ok).toBe(false);
    const longQuery = meta("vol", ["base:allocation"]);
    longQuery.writeUInt32BE(16, 11);
    expect(parseMetaContextRequest(longQuery).ok).toBe(false);
    expect(parseMetaContextRequest(Buffer.concat([meta("vol", ["a:b"]), Buffer.alloc(1)])).ok).toBe(false);
    expect(parseMetaContextRequest(Buffer.alloc(7)).ok).toBe(false);
  });
});

describe("decodeString", () => {
  it("accepts UTF-8 up to 4096 bytes", () => {
    expect(decodeString(Buffer.from("snapshot-ü"), "name")).toEqual({ ok: true, value: "snapshot-ü" });
    expect(decodeString(Buffer.alloc(4097, 0x61), "name").ok).toBe(false);
  });
});
