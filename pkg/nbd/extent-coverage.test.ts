import { describe, expect, it } from "vitest";
import { buildBlockStatus } from "./block-status.js";
import { NBD_STATE_HOLE, NBD_STATE_ZERO } from "./constants.js";
import { coverRange } from "./extent-coverage.js";

describe("coverRange", () => {
  it("clips to the range and merges neighbours of the same state", () => {
    expect(
      coverRange(100, 300, [
        { offset: 0, length: 200, allocated: true },
        { offset: 200, length: 50, allocated: true },
        { offset: 250, length: 500, allocated: false },
      ]),
    ).toEqual([
      { offset: 100, length: 150, allocated: true },
      { offset: 250, length: 150, allocated: false },
    ]);
  });

  it("treats gaps as allocated (never claims a hole it was not told about)", () => {
    expect(coverRange(0, 100, [{ offset: 40, length: 20, allocated: false }])).toEqual([
      { offset: 0, length: 40, allocated: true },
      { offset: 40, length: 20, allocated: false },
      { offset: 60, length: 40, allocated: true },
    ]);
    expect(coverRange(0, 10, [])).toEqual([{ offset: 0, length: 10, allocated: true }]);
  });

  it("survives unsorted, overlapping, empty and out-of-range extents", () => {
    const runs = coverRange(10, 100, [
      { offset: 500, length: 10, allocated: false },
      { offset: 50, length: 0, allocated: false },
      { offset: 60, length: 100, allocated: false },
      { offset: 0, length: 70, allocated: true },
    ]);
    expect(runs).toEqual([
      { offset: 10, length: 60, allocated: true },
      { offset: 70, length: 40, allocated: false },
    ]);
  });
});

describe("buildBlockStatus", () => {
  const extents = [
    { offset: 0, length: 4096, allocated: false },
    { offset: 4096, length: 4096, allocated: true },
    { offset: 8192, length: 4096, allocated: false },
  ];

  it("reports holes as HOLE|ZERO and data as 0", () => {
    expect(buildBlockStatus(0, 12288, extents, { reqOne: false, maxDescriptors: 100 })).toEqual([
      { length: 4096, flags: NBD_STATE_HOLE | NBD_STATE_ZERO },
      { length: 4096, flags: 0 },
      { length: 4096, flags: NBD_STATE_HOLE | NBD_STATE_ZERO },
    ]);
  });

  it("returns one descriptor for REQ_ONE and at most maxDescriptors otherwise", () => {
    expect(buildBlockStatus(2048, 8192, extents, { reqOne: true, maxDescriptors: 100 })).toEqual([
      { length: 2048, flags: NBD_STATE_HOLE | NBD_STATE_ZERO },
    ]);
    expect(buildBlockStatus(0, 12288, extents, { reqOne: false, maxDescriptors: 2 })).toHaveLength(2);
  });
});
