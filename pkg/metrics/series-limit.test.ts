import { describe, expect, it } from "vitest";
import { OVERFLOW_LABEL, SeriesLimit } from "./series-limit.js";

describe("SeriesLimit", () => {
  it("admits the first max names and folds the rest into _other", () => {
    const limit = new SeriesLimit(2);
    expect(limit.labelFor("a")).toBe("a");
    expect(limit.labelFor("b")).toBe("b");
    expect(limit.labelFor("c")).toBe(OVERFLOW_LABEL);
    expect(limit.labelFor("a")).toBe("a");
  });

  it("frees the slot of a name that disappeared", () => {
    const limit = new SeriesLimit(1);
    expect(limit.labelFor("a")).toBe("a");
    expect(limit.retain(new Set(["b"]))).toEqual(["a"]);
    expect(limit.labelFor("b")).toBe("b");
  });

  it("with max 0 admits nothing", () => {
    expect(new SeriesLimit(0).labelFor("a")).toBe(OVERFLOW_LABEL);
  });
});
