import { describe, expect, it } from "vitest";
import { createLogger } from "./json-logger.js";

describe("createLogger", () => {
  it("writes one JSON object per line at or above its level, with errors serialised", () => {
    const lines: string[] = [];
    const logger = createLogger({
      level: "info",
      write: (line) => lines.push(line),
      base: { component: "nbd" },
    });
    logger.debug("hidden");
    logger.error("failed", { err: Object.assign(new Error("boom"), { code: "EIO" }), big: 5n });
    expect(lines).toHaveLength(1);
    expect(lines[0]?.endsWith("\n")).toBe(true);
    expect(JSON.parse(lines[0]!)).toMatchObject({
      level: "error",
      msg: "failed",
      component: "nbd",
      err: { name: "Error", message: "boom", code: "EIO" },
      big: "5",
    });
  });
});
