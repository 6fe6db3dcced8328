import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { assertPathWithinRoot, assertRealPathWithinRoot, assertSafeAbsolutePath } from "./path-safety.js";

describe("assertSafeAbsolutePath", () => {
  it("accepts absolute normalized paths", () => {
    expect(assertSafeAbsolutePath("/var/lib/kubelet/pods/x", "target")).toBe("/var/lib/kubelet/pods/x");
    expect(assertSafeAbsolutePath("/", "target")).toBe("/");
  });

  it("rejects relative, unnormalized and control-character paths", () => {
    for (const p of ["", "relative/x", "/a/../b", "/a/./b", "/a//b", "/a/", "/a/..", "/a\nb", "/a\u0000b"]) {
      expect(() => assertSafeAbsolutePath(p, "target"), JSON.stringify(p)).toThrow(/target/);
    }
  });
});

describe("assertPathWithinRoot", () => {
  it("accepts the root and paths below it only", () => {
    const root = "/var/lib/kubelet";
    expect(assertPathWithinRoot({ root, path: "/var/lib/kubelet/pods/a", what: "t" })).toBe(
      "/var/lib/kubelet/pods/a",
    );
    expect(assertPathWithinRoot({ root, path: root, what: "t" })).toBe(root);
    expect(() => assertPathWithinRoot({ root, path: "/var/lib/kubelet-evil/x", what: "t" })).toThrow(
      /outside/,
    );
    expect(() => assertPathWithinRoot({ root, path: "/var/lib/kubelet/../../etc", what: "t" })).toThrow(
      /'\.\.'/,
    );
  });
});

describe("assertRealPathWithinRoot", () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const dir of dirs) await fs.rm(dir, { recursive: true, force: true });
  });

  it("follows symlinks in the existing part of the path", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "snapblock-paths-"));
    dirs.push(dir);
    const root = path.join(dir, "root");
    await fs.mkdir(path.join(root, "pods"), { recursive: true });
    await fs.symlink("/etc", path.join(root, "pods", "escape"));
    await expect(
      assertRealPathWithinRoot({ root, path: path.join(root, "pods", "new", "target"), what: "t" }),
    ).resolves.toBe(path.join(root, "pods", "new", "target"));
    await expect(
      assertRealPathWithinRoot({ root, path: path.join(root, "pods", "escape", "x"), what: "t" }),
    ).rejects.toThrow(/outside the allowed root/);
  });
});
