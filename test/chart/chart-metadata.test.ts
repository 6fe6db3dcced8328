import { readFile } from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { CHART_DIR, REPO_ROOT, helm } from "./helm-render.js";

interface ChartYaml {
  apiVersion: string;
  name: string;
  version: string;
  appVersion: string;
}

describe("chart metadata", () => {
  it("follows package.json's version (chart version, appVersion and the default image tag)", async () => {
    const pkg = JSON.parse(await readFile(path.join(REPO_ROOT, "package.json"), "utf8")) as {
      version: string;
    };
    const chart = parse(await readFile(path.join(CHART_DIR, "Chart.yaml"), "utf8")) as ChartYaml;
    const values = parse(await readFile(path.join(CHART_DIR, "values.yaml"), "utf8")) as {
      image: { tag: string };
    };
    expect(chart.apiVersion).toBe("v2");
    expect(chart.name).toBe("snapblock");
    expect(chart.version).toBe(pkg.version);
    expect(chart.appVersion).toBe(pkg.version);
    expect(values.image.tag).toBe(pkg.version);
  });

  it("passes helm lint, also strict, with the default values", async () => {
    const { stdout } = await helm(["lint", "--strict", CHART_DIR]);
    expect(stdout).toContain("0 chart(s) failed");
  });

  it("passes helm lint with every TLS mode and the optional objects on and off", async () => {
    for (const set of [
      ["tls.mode=certManager"],
      ["tls.mode=existingSecret", "tls.existingSecret.ca=my-ca"],
      ["metrics.serviceMonitor.enabled=true", "storageClasses=null", "volumeSnapshotClasses=null"],
      ["snapshotMetadata.enabled=true"],
      ["networkPolicy.enabled=true"],
    ]) {
      const { stdout } = await helm(["lint", CHART_DIR, ...set.flatMap((s) => ["--set", s])]);
      expect(stdout, set.join(" ")).toContain("0 chart(s) failed");
    }
  });

  it("documents every top-level value in values.yaml", async () => {
    const text = await readFile(path.join(CHART_DIR, "values.yaml"), "utf8");
    const lines = text.split("\n");
    for (const [i, line] of lines.entries()) {
      if (!/^[a-zA-Z]+:/.test(line)) continue;
      expect(lines[i - 1] ?? "", `values.yaml line ${i + 1}: ${line}`).toMatch(/^#/);
    }
  });
});
