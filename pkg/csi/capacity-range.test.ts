import { describe, expect, it } from "vitest";
import { isSnapblockError } from "../errors/index.js";
import {
  DEFAULT_VOLUME_BYTES,
  chooseExpandedSize,
  chooseVolumeSize,
  readCapacityRange,
  sizeSatisfies,
} from "./capacity-range.js";

const MiB = 2 ** 20;
const code = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (err) {
    return isSnapblockError(err) ? err.code : "OTHER";
  }
  return undefined;
};

describe("capacity ranges (CSI spec, CreateVolume and CapacityRange)", () => {
  it("reads ranges: negative is INVALID_ARGUMENT, both zero is INVALID_ARGUMENT", () => {
    expect(readCapacityRange(null, "capacity_range")).toBeUndefined();
    expect(readCapacityRange({ requiredBytes: 5, limitBytes: 0 }, "c")).toEqual({
      requiredBytes: 5,
      limitBytes: 0,
    });
    expect(readCapacityRange({ requiredBytes: "7" }, "c")).toEqual({ requiredBytes: 7, limitBytes: 0 });
    expect(code(() => readCapacityRange({ requiredBytes: -1 }, "c"))).toBe("INVALID_ARGUMENT");
    expect(code(() => readCapacityRange({ requiredBytes: 0, limitBytes: 0 }, "c"))).toBe("INVALID_ARGUMENT");
  });

  it("chooses at least required, at most limit, preferring whole MiB", () => {
    expect(chooseVolumeSize(undefined)).toBe(DEFAULT_VOLUME_BYTES);
    expect(chooseVolumeSize({ requiredBytes: MiB + 1, limitBytes: 0 })).toBe(2 * MiB);
    expect(chooseVolumeSize({ requiredBytes: MiB + 1, limitBytes: MiB + 512 })).toBe(MiB + 512);
    expect(chooseVolumeSize({ requiredBytes: 0, limitBytes: 10 * MiB })).toBe(10 * MiB);
    expect(chooseVolumeSize({ requiredBytes: 0, limitBytes: 2 * DEFAULT_VOLUME_BYTES })).toBe(
      DEFAULT_VOLUME_BYTES,
    );
    expect(chooseVolumeSize({ requiredBytes: 0, limitBytes: 1000 })).toBe(512);
  });

  it("answers OUT_OF_RANGE for what cannot be satisfied", () => {
    expect(code(() => chooseVolumeSize({ requiredBytes: 10, limitBytes: 5 }))).toBe("OUT_OF_RANGE");
    expect(code(() => chooseVolumeSize({ requiredBytes: 0, limitBytes: 100 }))).toBe("OUT_OF_RANGE");
    expect(code(() => chooseVolumeSize({ requiredBytes: MiB + 1, limitBytes: MiB + 100 }))).toBe(
      "OUT_OF_RANGE",
    );
    expect(code(() => chooseVolumeSize({ requiredBytes: 2 ** 51, limitBytes: 0 }))).toBe("OUT_OF_RANGE");
  });

  it("honours the range when creating from a source, and refuses sizes below the source", () => {
    expect(chooseVolumeSize(undefined, 3 * MiB)).toBe(3 * MiB);
    expect(chooseVolumeSize({ requiredBytes: 3 * MiB, limitBytes: 0 }, 3 * MiB)).toBe(3 * MiB);
    // CSI spec, CreateVolume errors: OUT_OF_RANGE "when trying to create a volume smaller than the
    // source snapshot", rather than a volume silently larger than asked.
    expect(code(() => chooseVolumeSize({ requiredBytes: MiB, limitBytes: 0 }, 3 * MiB))).toBe("OUT_OF_RANGE");
    expect(chooseVolumeSize({ requiredBytes: 8 * MiB, limitBytes: 0 }, 3 * MiB)).toBe(8 * MiB);
    expect(code(() => chooseVolumeSize({ requiredBytes: 0, limitBytes: 2 * MiB }, 3 * MiB))).toBe(
      "OUT_OF_RANGE",
    );
  });

  it("judges repeated requests and expansions", () => {
    expect(sizeSatisfies(4 * MiB, { requiredBytes: 4 * MiB, limitBytes: 0 })).toBe(true);
    expect(sizeSatisfies(4 * MiB, { requiredBytes: 5 * MiB, limitBytes: 0 })).toBe(false);
    expect(sizeSatisfies(4 * MiB, { requiredBytes: 0, limitBytes: 3 * MiB })).toBe(false);
    expect(chooseExpandedSize({ requiredBytes: 2 * MiB, limitBytes: 0 }, 4 * MiB)).toBe(4 * MiB);
    expect(chooseExpandedSize({ requiredBytes: 5 * MiB + 3, limitBytes: 0 }, 4 * MiB)).toBe(5 * MiB + 512);
    expect(code(() => chooseExpandedSize({ requiredBytes: MiB, limitBytes: 2 * MiB }, 4 * MiB))).toBe(
      "OUT_OF_RANGE",
    );
  });
});
