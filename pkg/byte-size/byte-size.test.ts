import { describe, expect, it } from "vitest";
import { describeBytes, formatByteSize, parseByteSize } from "./index.js";

describe("byte sizes", () => {
  it("reads bytes and binary units", () => {
    expect(parseByteSize("1073741824", "--size")).toBe(2 ** 30);
    expect(parseByteSize("512M", "--size")).toBe(512 * 2 ** 20);
    expect(parseByteSize("10g", "--size")).toBe(10 * 2 ** 30);
    expect(parseByteSize("1.5T", "--size")).toBe(1.5 * 2 ** 40);
    expect(parseByteSize("64KiB", "--size")).toBe(65536);
    expect(parseByteSize(" 2 GB ", "--size")).toBe(2 * 2 ** 30);
  });

  it("refuses what is not a size, naming the flag", () => {
    for (const bad of ["-5G", "0", "abc", "1.5", "10X", "", "1e3", "99999999999P"]) {
      expect(() => parseByteSize(bad, "--size"), bad).toThrow(/--size .* is not a size/);
    }
  });

  it("writes sizes in the largest unit, one decimal at most", () => {
    expect(formatByteSize(0)).toBe("0 B");
    expect(formatByteSize(1023)).toBe("1023 B");
    expect(formatByteSize(1024)).toBe("1 KiB");
    expect(formatByteSize(64575504384)).toBe("60.1 GiB");
    expect(formatByteSize(2 ** 30 - 1)).toBe("1024 MiB");
    expect(formatByteSize(1.5 * 2 ** 40)).toBe("1.5 TiB");
  });

  it("describes sizes exactly for messages", () => {
    expect(describeBytes(512)).toBe("512 bytes");
    expect(describeBytes(64575504384)).toBe("60.1 GiB (64575504384 bytes)");
  });
});
