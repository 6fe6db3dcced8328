import { cp, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import { CHART_DIR, KUBE_VERSION, helm } from "./helm-render.js";

/**
 * helm template skips NOTES.txt and helm install --dry-run needs a cluster, so the test renders
 * a copy of the chart in which a ConfigMap carries NOTES.txt through tpl.
 */
describe("NOTES.txt", () => {
  let chart: string;
  beforeAll(async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "snapblock-notes-"));
    chart = path.join(dir, "snapblock");
    await cp(CHART_DIR, chart, { recursive: true });
    await rename(path.join(chart, "templates", "NOTES.txt"), path.join(chart, "notes.txt"));
    await writeFile(
      path.join(chart, "templates", "zz-notes.yaml"),
      'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}\n',
    );
  });
  afterAll(async () => {
    await rm(path.dirname(chart), { recursive: true, force: true });
  });

  async function notes(set: string[] = []): Promise<string> {
    const { stdout } = await helm([
      "template",
      "snapblock",
      chart,
      "-n",
      "snapblock",
      "--kube-version",
      KUBE_VERSION,
      "--show-only",
      "templates/zz-notes.yaml",
      ...set.flatMap((s) => ["--set", s]),
    ]);
    return (parse(stdout) as { data: { notes: string } }).data.notes;
  }

  it("tells the user the next commands, which paste into a shell as they are", async () => {
    const text = await notes();
    expect(text).toContain("kubectl -n snapblock rollout status daemonset/snapblock-node");
    expect(text).toContain("kubectl -n snapblock rollout status deployment/snapblock-controller");
    const heredocs = [...text.matchAll(/^kubectl apply -f - <<EOF\n([\s\S]*?)^EOF$/gm)].map(
      (m) => m[1] ?? "",
    );
    expect(heredocs).toHaveLength(2);
    const [pvc, snapshot] = heredocs.flatMap((h) =>
      parseAllDocuments(h).map((d) => d.toJS() as Record<string, never>),
    );
    expect(pvc).toMatchObject({ kind: "PersistentVolumeClaim", spec: { storageClassName: "snapblock" } });
    expect(snapshot).toMatchObject({
      kind: "VolumeSnapshot",
      spec: { volumeSnapshotClassName: "snapblock", source: { persistentVolumeClaimName: "snapblock-data" } },
    });
  });

  it("says what to do when no StorageClass is created", async () => {
    const text = await notes(["storageClasses=null", "volumeSnapshotClasses=null"]);
    expect(text).toContain("No StorageClass was created");
    expect(text).not.toContain("<<EOF");
  });
});
