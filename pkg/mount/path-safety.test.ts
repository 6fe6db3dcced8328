import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  assertNodePath,
  assertPathWithinRoot,
  assertRealPathWithinRoot,
  assertSafeAbsolutePath,
} from "./path-safety.js";

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

  it("rejects a component over NAME_MAX bytes as the caller's error", () => {
    expect(() => assertSafeAbsolutePath(`/a/${"x".repeat(256)}/b`, "target")).toThrow(
      expect.objectContaining({ code: "INVALID_ARGUMENT" }) as Error,
    );
    expect(assertSafeAbsolutePath(`/a/${"x".repeat(255)}`, "target")).toBe(`/a/${"x".repeat(255)}`);
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

describe("assertNodePath", () => {
  let dir: string;
  let root: string;
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "snapblock-node-paths-"));
    root = path.join(dir, "root");
    await fs.mkdir(path.join(root, "pods", "real"), { recursive: true });
    await fs.mkdir(path.join(dir, "outside"));
    await fs.writeFile(path.join(root, "file"), "");
    await fs.symlink(path.join(dir, "outside"), path.join(root, "pods", "escape"));
    await fs.symlink(path.join(root, "pods", "real"), path.join(root, "pods", "inside-link"));
    await fs.symlink(root, path.join(root, "pods", "to-root"));
  });
  afterAll(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });
  const check = (p: string, kind?: "directory" | "file") =>
    assertNodePath({ path: p, roots: [root], what: "target_path", ...(kind ? { kind } : {}) });
  const refusal = (p: Promise<unknown>) =>
    p.then(
      () => undefined,
      (err: unknown) => ({ code: (err as { code?: string }).code, message: (err as Error).message }),
    );

  it("accepts paths inside the root, existing or not, through links that stay inside", async () => {
    await expect(check(path.join(root, "pods", "real"), "directory")).resolves.toEqual({ exists: true });
    await expect(check(path.join(root, "pods", "new", "target"))).resolves.toEqual({ exists: false });
    await expect(check(path.join(root, "pods", "inside-link", "x"))).resolves.toEqual({ exists: false });
  });

  it("refuses a path that leads outside, or onto the root itself, through a symlink", async () => {
    expect(await refusal(check(path.join(root, "pods", "escape", "x")))).toMatchObject({
      code: "INVALID_ARGUMENT",
      message: expect.stringMatching(/resolves to .*outside/) as string,
    });
    expect(await refusal(check(path.join(root, "pods", "to-root", "x")))).toBeUndefined();
    expect(await refusal(check(path.join(dir, "elsewhere")))).toMatchObject({ code: "INVALID_ARGUMENT" });
  });

  it("refuses a symbolic link as the last component, wherever it points", async () => {
    for (const link of ["escape", "inside-link", "to-root"]) {
      expect(await refusal(check(path.join(root, "pods", link)))).toMatchObject({
        code: "INVALID_ARGUMENT",
        message: expect.stringContaining("symbolic link") as string,
      });
    }
    // Without roots too: nothing this plugin mounts at is ever a link.
    expect(
      await refusal(assertNodePath({ path: path.join(root, "pods", "inside-link"), roots: [], what: "t" })),
    ).toMatchObject({ code: "INVALID_ARGUMENT" });
  });

  it("refuses what the kernel cannot use as the caller's error, and an existing path of the wrong kind", async () => {
    expect(await refusal(check(path.join(root, "file", "below")))).toMatchObject({
      code: "INVALID_ARGUMENT",
    });
    expect(await refusal(check(path.join(root, "x".repeat(300))))).toMatchObject({
      code: "INVALID_ARGUMENT",
    });
    expect(await refusal(check(path.join(root, "file"), "directory"))).toMatchObject({
      code: "ALREADY_EXISTS",
    });
    expect(await refusal(check(path.join(root, "pods"), "file"))).toMatchObject({ code: "ALREADY_EXISTS" });
  });
});
