import { describe, expect, it } from "vitest";
import { isSnapblockError } from "../errors/index.js";
import { HASH_PREFIX, engineNameFor, isEngineName, validateCsiName } from "./engine-names.js";
import { formatResourceId, parseResourceId } from "./resource-id.js";
import { validateNodeId } from "../engine-api/index.js";

describe("engine names", () => {
  it("keeps the names the sidecars send", () => {
    expect(engineNameFor("pvc-0d6f2a3e-9b1c-4c1e-8f00-1234567890ab")).toBe(
      "pvc-0d6f2a3e-9b1c-4c1e-8f00-1234567890ab",
    );
    expect(engineNameFor("snapshot-0d6f2a3e-9b1c-4c1e-8f00-1234567890ab")).toBe(
      "snapshot-0d6f2a3e-9b1c-4c1e-8f00-1234567890ab",
    );
  });

  it("hashes anything else, deterministically and to a valid engine name", () => {
    for (const name of [
      "with space",
      "../../etc",
      "ünïcode",
      "x".repeat(65),
      ".dot-first",
      "a/b",
      `${HASH_PREFIX}abc`,
      "rp--12-1796051045000",
    ]) {
      const mapped = engineNameFor(name);
      expect(mapped).toMatch(/^h--[0-9a-f]{40}$/);
      expect(engineNameFor(name)).toBe(mapped);
      expect(isEngineName(mapped)).toBe(true);
    }
    expect(engineNameFor("a b")).not.toBe(engineNameFor("a  b"));
  });

  it("never maps a kept name onto a hashed one", () => {
    // A CSI name that looks like a hash is itself hashed, so kept and hashed names cannot meet.
    const hashed = engineNameFor("some name");
    expect(engineNameFor(hashed)).not.toBe(hashed);
  });

  it("refuses empty names and the control characters the CSI spec bans", () => {
    for (const bad of ["", "a\u0000b", "tab\u000bbad", "del\u007f", "c1\u0085"]) {
      expect(() => validateCsiName(bad, "volume")).toThrow();
    }
    expect(validateCsiName("line\nbreak and\ttab are allowed", "volume")).toBeTruthy();
    let refused: unknown;
    try {
      validateCsiName("x".repeat(2000), "volume");
    } catch (err) {
      refused = err;
    }
    expect(isSnapblockError(refused, "INVALID_ARGUMENT")).toBe(true);
    expect((refused as Error).message).toBe("volume name is longer than 1024 bytes");
  });
});

describe("resource ids", () => {
  it("round-trips <node>/<engine-name> within the CSI 128-byte limit", () => {
    const id = formatResourceId({ nodeId: "n".repeat(63), engineName: engineNameFor("x".repeat(300)) });
    expect(Buffer.byteLength(id)).toBeLessThanOrEqual(128);
    expect(parseResourceId(id)).toEqual({
      nodeId: "n".repeat(63),
      engineName: engineNameFor("x".repeat(300)),
    });
  });

  it("rejects anything that could be a path or is not ours", () => {
    for (const bad of [
      "",
      "pvc-1",
      "/pvc",
      "local/",
      "local/../x",
      "local/a/b",
      "../local/x",
      "local/.hidden",
      "lo cal/x",
      "local/x\u0000",
    ]) {
      expect(parseResourceId(bad), bad).toBeUndefined();
    }
  });

  it("validates node ids", () => {
    expect(validateNodeId("worker-1.example")).toBe("worker-1.example");
    for (const bad of ["", "-x", "a/b", "x".repeat(64)]) expect(() => validateNodeId(bad)).toThrow();
  });
});
