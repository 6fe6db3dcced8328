import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT, find, parseObjects } from "./helm-render.js";

const run = promisify(execFile);

describe("deploy/ manifests", () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), "snapblock-deploy-"));
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it("are what hack/render-deploy.sh renders from the chart today (run it after changing the chart)", async () => {
    const out = path.join(tmp, "snapblock.yaml");
    await run("bash", [path.join(REPO_ROOT, "hack", "render-deploy.sh"), out], { cwd: REPO_ROOT });
    const fresh = await readFile(out, "utf8");
    const committed = await readFile(path.join(REPO_ROOT, "deploy", "snapblock.yaml"), "utf8");
    expect(committed === fresh, "deploy/snapblock.yaml is stale: run hack/render-deploy.sh").toBe(true);
  });

  it("carry no private key and mount the CA Secret deploy/engine-tls.sh creates", async () => {
    const text = await readFile(path.join(REPO_ROOT, "deploy", "snapblock.yaml"), "utf8");
    expect(text).not.toContain("PRIVATE KEY");
    const objects = parseObjects(text);
    expect(find(objects, "Secret")).toEqual([]);
    expect(
      objects.every(
        (o) =>
          o.kind === "CSIDriver" ||
          o.kind === "CustomResourceDefinition" ||
          o.kind.startsWith("Cluster") ||
          o.kind.endsWith("Class") ||
          o.metadata.namespace === "snapblock",
      ),
    ).toBe(true);
    const script = await readFile(path.join(REPO_ROOT, "deploy", "engine-tls.sh"), "utf8");
    expect(text).toContain("secretName: snapblock-engine-ca");
    expect(script).toContain("create secret generic snapblock-engine-ca --type=kubernetes.io/tls");
  });
});
