import { describe, expect, it } from "vitest";
import { CsiStatusError } from "./csi-status-error.js";
import { decodePageToken, encodePageToken, paginate, validateMaxEntries } from "./page-token.js";

const items = [1, 2, 4, 7, 9].map((id) => ({ id }));

describe("page tokens (CSI spec, ListVolumes/ListSnapshots)", () => {
  it("pages in id order, resuming after the last id returned", () => {
    const first = paginate("volumes", items, 0, 2);
    expect(first.page.map((i) => i.id)).toEqual([1, 2]);
    const after = decodePageToken("volumes", first.nextToken, 10);
    const second = paginate(
      "volumes",
      items.filter((i) => i.id !== 4),
      after,
      2,
    );
    expect(second.page.map((i) => i.id)).toEqual([7, 9]);
    expect(second.nextToken).toBe("");
    expect(paginate("volumes", items, 0, 0).page).toHaveLength(5);
  });

  it("answers ABORTED for tokens it could not have issued", () => {
    for (const token of ["x", "v", "v-1", "s3", "v10", "v1e3", " v1"]) {
      expect(() => decodePageToken("volumes", token, 10), token).toThrow(CsiStatusError);
    }
    expect(decodePageToken("snapshots", encodePageToken("snapshots", 3), 10)).toBe(3);
    expect(decodePageToken("volumes", "", 10)).toBe(0);
  });

  it("refuses negative max_entries", () => {
    expect(() => validateMaxEntries(-1)).toThrow(/negative/);
    expect(validateMaxEntries(0)).toBe(0);
  });
});
