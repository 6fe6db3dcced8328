import { describe, expect, it } from "vitest";
import { VolumeClaims } from "./volume-claims.js";

describe("volume claims", () => {
  it("gives a volume to one user at a time, and says what to do", () => {
    const claims = new VolumeClaims();
    claims.claim("data", "staged", "local/data");
    claims.claim("data", "staged", "local/data");
    let refused: unknown;
    try {
      claims.claim("data", "exported", "local/data");
    } catch (err) {
      refused = err;
    }
    expect(refused).toMatchObject({ status: "FAILED_PRECONDITION" });
    expect((refused as Error).message).toMatch(/staged.*detach it first/);
    claims.release("data", "exported");
    expect(claims.holder("data")).toBe("staged");
    claims.release("data", "staged");
    claims.claim("data", "exported", "local/data");
    expect(() => claims.claim("data", "staged", "local/data")).toThrow(/volume unexport local\/data/);
    claims.claim("other", "staged", "local/other");
    expect(claims.holder("other")).toBe("staged");
  });
});
