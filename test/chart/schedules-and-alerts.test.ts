import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { parseScheduleSpec } from "../../pkg/k8s/index.js";
import {
  REPO_ROOT,
  container,
  find,
  flag,
  hasFlag,
  one,
  parseObjects,
  podSpec,
  render,
  type K8sObject,
} from "./helm-render.js";

const run = promisify(execFile);

interface Schema {
  type?: string;
  required?: string[];
  properties?: Record<string, Schema>;
  items?: Schema;
  enum?: unknown[];
  pattern?: string;
  minimum?: number;
  minProperties?: number;
  additionalProperties?: Schema | boolean;
}

/** What the API server's structural-schema validation would say of `value` (the parts the CRD uses). */
function schemaProblems(value: unknown, schema: Schema, at = ""): string[] {
  const problems: string[] = [];
  const kind = Array.isArray(value) ? "array" : value === null ? "null" : typeof value;
  const expected = schema.type === "integer" ? "number" : schema.type;
  if (expected && kind !== expected) return [`${at}: ${kind}, not ${schema.type}`];
  if (schema.type === "integer" && !Number.isInteger(value)) problems.push(`${at}: not an integer`);
  if (schema.enum && !schema.enum.includes(value))
    problems.push(`${at}: not one of ${schema.enum.join(", ")}`);
  if (schema.pattern && !new RegExp(schema.pattern).test(String(value)))
    problems.push(`${at}: not ${schema.pattern}`);
  if (schema.minimum !== undefined && (value as number) < schema.minimum)
    problems.push(`${at}: < ${schema.minimum}`);
  if (kind === "object") {
    const o = value as Record<string, unknown>;
    for (const r of schema.required ?? []) if (!(r in o)) problems.push(`${at}.${r}: required`);
    if (schema.minProperties !== undefined && Object.keys(o).length < schema.minProperties)
      problems.push(`${at}: needs ${schema.minProperties} field(s)`);
    for (const [k, v] of Object.entries(o)) {
      const sub =
        schema.properties?.[k] ??
        (typeof schema.additionalProperties === "object" ? schema.additionalProperties : undefined);
      if (!sub) problems.push(`${at}.${k}: unknown field`);
      else problems.push(...schemaProblems(v, sub, `${at}.${k}`));
    }
  }
  if (kind === "array" && schema.items)
    (value as unknown[]).forEach((v, i) => problems.push(...schemaProblems(v, schema.items!, `${at}[${i}]`)));
  return problems;
}

function crdSchema(crd: K8sObject): Schema {
  const versions = (crd.spec as { versions: Array<{ schema: { openAPIV3Schema: Schema } }> }).versions;
  return versions[0]!.schema.openAPIV3Schema;
}

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "snapblock-chart-sched-"));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe("SnapshotSchedule in the chart", () => {
  let objects: K8sObject[];
  beforeAll(async () => {
    objects = await render();
  });

  it("ships the CRD with a status subresource, printer columns, and kept on uninstall", () => {
    const crd = one(objects, "CustomResourceDefinition", "snapshotschedules.snapblock.dev");
    expect(crd.metadata.annotations).toEqual({ "helm.sh/resource-policy": "keep" });
    const spec = crd.spec as {
      group: string;
      scope: string;
      names: { kind: string };
      versions: Array<{
        name: string;
        subresources: unknown;
        additionalPrinterColumns: Array<{ name: string; jsonPath: string }>;
      }>;
    };
    expect(spec).toMatchObject({
      group: "snapblock.dev",
      scope: "Namespaced",
      names: { kind: "SnapshotSchedule" },
    });
    expect(spec.versions[0]!.name).toBe("v1alpha1");
    expect(spec.versions[0]!.subresources).toEqual({ status: {} });
    expect(spec.versions[0]!.additionalPrinterColumns.map((c) => c.name)).toEqual(
      expect.arrayContaining(["Schedule", "Keep", "Max-Age", "Snapshots", "Last", "Next", "Error"]),
    );
  });

  it("runs the controller with --snapshot-schedules and grants exactly what the reconciler uses", () => {
    const snapblock = container(podSpec(one(objects, "Deployment", "snapblock-controller")), "snapblock");
    expect(hasFlag(snapblock, "snapshot-schedules")).toBe(true);
    expect(flag(snapblock, "schedule-poll")).toBe("30");
    const rules = one(objects, "ClusterRole", "snapblock-controller").rules;
    expect(rules).toEqual(
      expect.arrayContaining([
        { apiGroups: ["snapblock.dev"], resources: ["snapshotschedules"], verbs: ["list"] },
        { apiGroups: ["snapblock.dev"], resources: ["snapshotschedules/status"], verbs: ["patch"] },
        { apiGroups: [""], resources: ["persistentvolumeclaims"], verbs: ["list"] },
        {
          apiGroups: ["snapshot.storage.k8s.io"],
          resources: ["volumesnapshots"],
          verbs: ["list", "create", "delete"],
        },
        { apiGroups: [""], resources: ["events"], verbs: ["create"] },
      ]),
    );
  });

  it("leaves all of it out when switched off", async () => {
    const off = await render({ set: ["snapshotSchedules.enabled=false"] });
    expect(find(off, "CustomResourceDefinition")).toEqual([]);
    const snapblock = container(podSpec(one(off, "Deployment", "snapblock-controller")), "snapblock");
    expect(hasFlag(snapblock, "snapshot-schedules")).toBe(false);
    const resources = (
      one(off, "ClusterRole", "snapblock-controller").rules as Array<{ resources: string[] }>
    ).flatMap((r) => r.resources);
    expect(resources).not.toContain("snapshotschedules");
    expect(resources).not.toContain("volumesnapshots");
  });

  it("accepts examples/snapshot-schedule.yaml, which picks the example PVC with the chart's class", async () => {
    const crd = one(objects, "CustomResourceDefinition", "snapshotschedules.snapblock.dev");
    const [example] = parseObjects(
      await readFile(path.join(REPO_ROOT, "examples", "snapshot-schedule.yaml"), "utf8"),
    );
    const [pvc] = parseObjects(await readFile(path.join(REPO_ROOT, "examples", "pvc.yaml"), "utf8"));
    expect(example!.apiVersion).toBe("snapblock.dev/v1alpha1");
    const { apiVersion: _a, kind: _k, metadata: _m, ...body } = example!;
    expect(schemaProblems(body, crdSchema(crd))).toEqual([]);
    const spec = parseScheduleSpec(example!.spec);
    expect(spec.volumeSnapshotClassName).toBe(one(objects, "VolumeSnapshotClass").metadata.name);
    expect(spec.selector.matchLabels).toEqual(pvc!.metadata.labels);
    // And the schema refuses what it should.
    expect(
      schemaProblems({ spec: { schedule: "0 * * * *", selector: {}, retention: {} } }, crdSchema(crd)),
    ).toEqual([".spec.retention: needs 1 field(s)"]);
    expect(
      schemaProblems(
        { spec: { schedule: "x", selector: {}, retention: { maxAge: "7 days" } } },
        crdSchema(crd),
      ),
    ).toHaveLength(1);
  });
});

describe("PrometheusRule alerts", () => {
  it("are off by default and pass promtool when on", async () => {
    expect(find(await render(), "PrometheusRule")).toEqual([]);
    const objects = await render({
      set: ["metrics.alerts.enabled=true", "metrics.alerts.alertLabels.team=storage"],
    });
    const rule = one(objects, "PrometheusRule");
    const groups = (
      rule.spec as { groups: Array<{ rules: Array<{ alert: string; labels: Record<string, string> }> }> }
    ).groups;
    expect(groups.flatMap((g) => g.rules.map((r) => r.alert))).toEqual([
      "SnapblockPoolFilling",
      "SnapblockPoolAlmostFull",
      "SnapblockPoolFull",
      "SnapblockConsistencyCheckFailed",
      "SnapblockProtectionLagging",
    ]);
    expect(groups[0]!.rules[0]!.labels).toEqual({ severity: "warning", team: "storage" });
    const file = path.join(tmp, "rules.yaml");
    await writeFile(file, stringify(rule.spec));
    const { stdout } = await run("promtool", ["check", "rules", file]);
    expect(stdout).toMatch(/SUCCESS: 5 rules found/);
  });

  it("warn of a protected volume whose points fall behind, and only of it (promtool test rules)", async () => {
    const objects = await render({
      set: ["metrics.alerts.enabled=true", "metrics.alerts.protectionLag.for=2m"],
    });
    const rules = path.join(tmp, "lag-rules.yaml");
    await writeFile(rules, stringify(one(objects, "PrometheusRule").spec));
    // Three volumes scraped every minute for 10 minutes: "behind" written and without a point for
    // 5 minutes of a 1 s policy; "busy" a few seconds behind all the time (points every few
    // ticks on a loaded node); "hourly" 30 minutes behind on a 1 h policy.
    const at = (volume: string) => `{pool="p", volume="${volume}", instance="n1", job="snapblock"}`;
    const test = {
      rule_files: [rules],
      evaluation_interval: "1m",
      tests: [
        {
          interval: "1m",
          input_series: [
            {
              series: `snapblock_volume_protection_lag_seconds${at("behind")}`,
              values: "0 60 120 180 240 300 360 420 480 540 600",
            },
            { series: `snapblock_volume_protection_interval_seconds${at("behind")}`, values: "1x10" },
            { series: `snapblock_volume_protection_lag_seconds${at("busy")}`, values: "3x10" },
            { series: `snapblock_volume_protection_interval_seconds${at("busy")}`, values: "1x10" },
            { series: `snapblock_volume_protection_lag_seconds${at("hourly")}`, values: "1800x10" },
            { series: `snapblock_volume_protection_interval_seconds${at("hourly")}`, values: "3600x10" },
          ],
          alert_rule_test: [
            { eval_time: "1m", alertname: "SnapblockProtectionLagging", exp_alerts: [] },
            {
              eval_time: "5m",
              alertname: "SnapblockProtectionLagging",
              exp_alerts: [
                {
                  exp_labels: {
                    severity: "warning",
                    pool: "p",
                    volume: "behind",
                    instance: "n1",
                    job: "snapblock",
                  },
                  exp_annotations: {
                    summary: "recovery points of volume behind on n1 are falling behind",
                    description:
                      "Written 5m 0s ago and no recovery point since, more than 10 times its policy's interval: data written since could not be restored. See the node plugin's log for \"recovery point failed\" and snapblock volume points.",
                  },
                },
              ],
            },
          ],
        },
      ],
    };
    const file = path.join(tmp, "lag-test.yaml");
    await writeFile(file, stringify(test));
    const { stdout } = await run("promtool", ["test", "rules", file]);
    expect(stdout).toMatch(/SUCCESS/);
  });

  it("are left out without metrics", async () => {
    expect(
      find(await render({ set: ["metrics.enabled=false", "metrics.alerts.enabled=true"] }), "PrometheusRule"),
    ).toEqual([]);
  });
});

describe("StorageClass snapshot limits", () => {
  it("become the parameters the driver validates", async () => {
    const objects = await render({
      set: [
        "storageClasses[0].name=limited",
        "storageClasses[0].maxSnapshots=24",
        "storageClasses[0].maxSnapshotSpace=20Gi",
      ],
    });
    expect(one(objects, "StorageClass", "limited").parameters).toMatchObject({
      "snapblock.dev/maxSnapshots": "24",
      "snapblock.dev/maxSnapshotSpace": "20Gi",
    });
    const plain = await render();
    expect(Object.keys(one(plain, "StorageClass").parameters as object)).toEqual([
      "csi.storage.k8s.io/fstype",
    ]);
  });
});
