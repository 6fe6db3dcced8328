import { describe, expect, it } from "vitest";
import { matchesSelector, selectorProblem, selectorString } from "./label-selector.js";

describe("label selectors", () => {
  const selector = {
    matchLabels: { app: "db" },
    matchExpressions: [
      { key: "tier", operator: "In", values: ["gold", "silver"] },
      { key: "env", operator: "NotIn", values: ["test"] },
      { key: "backup", operator: "Exists" },
      { key: "legacy", operator: "DoesNotExist" },
    ],
  };

  it("is written as the API's labelSelector query", () => {
    expect(selectorString(selector)).toBe("app=db,tier in (gold,silver),env notin (test),backup,!legacy");
    expect(selectorString({})).toBe("");
  });

  it("matches as the API server does", () => {
    const base = { app: "db", tier: "gold", backup: "" };
    expect(matchesSelector(base, selector)).toBe(true);
    expect(matchesSelector({ ...base, env: "test" }, selector)).toBe(false);
    expect(matchesSelector({ ...base, env: "prod" }, selector)).toBe(true);
    expect(matchesSelector({ ...base, legacy: "1" }, selector)).toBe(false);
    expect(matchesSelector({ app: "db", tier: "gold" }, selector)).toBe(false);
    expect(matchesSelector({ ...base, tier: "bronze" }, selector)).toBe(false);
    expect(matchesSelector({ anything: "x" }, {})).toBe(true);
  });

  it("refuses what the API would", () => {
    expect(selectorProblem({ matchExpressions: [{ key: "a", operator: "In" }] })).toMatch(/needs values/);
    expect(selectorProblem({ matchExpressions: [{ key: "a", operator: "Exists", values: ["x"] }] })).toMatch(
      /takes no values/,
    );
    expect(() => selectorString({ matchExpressions: [{ key: "a", operator: "Like" }] })).toThrow(/operator/);
  });
});
