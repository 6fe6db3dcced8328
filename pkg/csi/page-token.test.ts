import { describe, expect, it } from "vitest";
import {
  compareCursors,
  decodePageToken,
  encodePageToken,
  paginate,
  validateMaxEntries,
} from "./page-token.js";
import { StatusError } from "../errors/index.js";

const items = [1, 2, 4, 7, 9].map((id) => ({ nodeId: "a", id }));
const marks = new Map([
  ["a", 10],
  ["b", 3],
]);

describe("page tokens (CSI spec, ListVolumes/ListSnapshots)", () => {
  it("pages in id order, resuming after the last id returned", () => {
    const first = paginate("volumes", items, undefined, 2);
    expect(first.page.map((i) => i.id)).toEqual([1, 2]);
    const after = decodePageToken("volumes", first.nextToken, marks);
    const second = paginate(
      "volumes",
      items.filter((i) => i.id !== 4),
      after,
      2,
    );
    expect(second.page.map((i) => i.id)).toEqual([7, 9]);
    expect(second.nextToken).toBe("");
    expect(paginate("volumes", items, undefined, 0).page).toHaveLength(5);
  });

  it("pages node by node", () => {
    const all = [...items, { nodeId: "b", id: 1 }, { nodeId: "b", id: 2 }].sort(compareCursors);
    const first = paginate("volumes", all, undefined, 5);
    expect(first.nextToken).toBe("v9@a");
    const second = paginate("volumes", all, decodePageToken("volumes", first.nextToken, marks), 5);
    expect(second.page).toEqual([
      { nodeId: "b", id: 1 },
      { nodeId: "b", id: 2 },
    ]);
  });

  it("answers ABORTED for tokens it could not have issued", () => {
    for (const token of ["x", "v", "v-1", "s3@a", "v10@a", "v1e3@a", " v1@a", "v1", "v1@c", "v3@b"]) {
      expect(() => decodePageToken("volumes", token, marks), token).toThrow(StatusError);
    }
    expect(decodePageToken("snapshots", encodePageToken("snapshots", { nodeId: "a", id: 3 }), marks)).toEqual(
      {
        nodeId: "a",
        id: 3,
      },
    );
    expect(decodePageToken("volumes", "", marks)).toBeUndefined();
  });

  it("refuses negative max_entries", () => {
    expect(() => validateMaxEntries(-1)).toThrow(/negative/);
    expect(validateMaxEntries(0)).toBe(0);
  });
});
