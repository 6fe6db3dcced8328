import { describe, expect, it } from "vitest";
import { nodePathProblem, validateNodePath } from "./node-paths.js";

describe("node paths", () => {
  it("accepts normalized absolute paths, inside the roots when configured", () => {
    expect(validateNodePath("/var/lib/kubelet/pods/x/volumes/v", "target_path")).toBe(
      "/var/lib/kubelet/pods/x/volumes/v",
    );
    expect(validateNodePath("/var/lib/kubelet/x", "p", ["/var/lib/kubelet"])).toBe("/var/lib/kubelet/x");
  });

  it("refuses paths that are relative, not normalized, escape, or leave the roots", () => {
    const bad = [
      "",
      "relative/path",
      "/",
      "/a/../b",
      "/a/./b",
      "//a",
      "/a//b",
      "/a/",
      "/a\u0000b",
      `/${"x".repeat(5000)}`,
    ];
    for (const p of bad) expect(() => validateNodePath(p, "target_path"), JSON.stringify(p)).toThrow();
    expect(() => validateNodePath("/var/lib/kubeletX/y", "p", ["/var/lib/kubelet"])).toThrow(/outside/);
    expect(() => validateNodePath("/var/lib/kubelet", "p", ["/var/lib/kubelet"])).toThrow(/outside/);
  });

  it("refuses a component the kernel would refuse (ENAMETOOLONG), and takes one of 255 bytes", () => {
    expect(() => validateNodePath(`/var/lib/kubelet/${"x".repeat(256)}/stage`, "p")).toThrow(
      /component longer than 255 bytes/,
    );
    // Bytes, not characters: 128 two-byte characters are 256 bytes.
    expect(() => validateNodePath(`/var/lib/kubelet/${"é".repeat(128)}`, "p")).toThrow(/255 bytes/);
    const longest = `/var/lib/kubelet/${"x".repeat(255)}`;
    expect(validateNodePath(longest, "p")).toBe(longest);
  });
});

describe("node path problems", () => {
  it("tells a missing or malformed path from one that is merely not ours", () => {
    expect(nodePathProblem("", "volume_path")?.kind).toBe("missing");
    expect(nodePathProblem("/a\u0000b", "volume_path")?.kind).toBe("malformed");
    expect(nodePathProblem(`/${"x".repeat(5000)}`, "volume_path")?.kind).toBe("malformed");
    expect(nodePathProblem("some/path", "volume_path")?.kind).toBe("elsewhere");
    expect(nodePathProblem("/a/../b", "volume_path")?.kind).toBe("elsewhere");
    expect(nodePathProblem("/etc/x", "volume_path", ["/var/lib/kubelet"])?.kind).toBe("elsewhere");
    expect(nodePathProblem("/var/lib/kubelet/x", "volume_path", ["/var/lib/kubelet"])).toBeUndefined();
  });
});
