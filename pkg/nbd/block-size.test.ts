import { describe, expect, it } from "vitest";
import { computeBlockSize } from "./block-size.js";

const MiB = 1024 * 1024;

describe("computeBlockSize", () => {
  it("prefers the chunk size and caps the maximum at the payload limit", () => {
    expect(computeBlockSize({ minimum: 1, chunkSize: 65536, maxPayloadBytes: 32 * MiB })).toEqual({
      minimum: 1,
      preferred: 65536,
      maximum: 32 * MiB,
    });
  });

  it("keeps the preferred size a power of two within [max(min, 512), 2 MiB] and below the maximum", () => {
    expect(computeBlockSize({ minimum: 1, chunkSize: 4 * MiB, maxPayloadBytes: 32 * MiB }).preferred).toBe(
      2 * MiB,
    );
    expect(computeBlockSize({ minimum: 1, chunkSize: 100, maxPayloadBytes: 32 * MiB }).preferred).toBe(512);
    expect(computeBlockSize({ minimum: 512, chunkSize: 3 * 4096, maxPayloadBytes: 32 * MiB }).preferred).toBe(
      8192,
    );
    expect(computeBlockSize({ minimum: 1, chunkSize: 1 * MiB, maxPayloadBytes: 65536 }).preferred).toBe(
      65536,
    );
    expect(computeBlockSize({ minimum: 1, chunkSize: 0, maxPayloadBytes: 32 * MiB }).preferred).toBe(4096);
  });

  it("rejects minimums other than 1 and 512 and unusable maximums", () => {
    expect(() => computeBlockSize({ minimum: 4096, chunkSize: 65536, maxPayloadBytes: 32 * MiB })).toThrow(
      /1 or 512/,
    );
    expect(() => computeBlockSize({ minimum: 512, chunkSize: 65536, maxPayloadBytes: 100 })).toThrow();
  });
});
