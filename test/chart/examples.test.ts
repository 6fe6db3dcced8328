import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT, one, parseObjects, render, type K8sObject } from "./helm-render.js";

const run = promisify(execFile);

async function example(name: string): Promise<K8sObject> {
  const objects = parseObjects(await readFile(path.join(REPO_ROOT, "examples", `${name}.yaml`), "utf8"));
  expect(objects).toHaveLength(1);
  return objects[0] as K8sObject;
}

describe("examples/ and the scripts around them", () => {
  let chart: K8sObject[];
  beforeAll(async () => {
    chart = await render();
  });

  it("chain PVC -> writer pod -> snapshot -> restored PVC -> reader pod over the chart's classes", async () => {
    const pvc = await example("pvc");
    const pod = await example("pod");
    const snapshot = await example("snapshot");
    const restore = await example("restore");
    const reader = await example("restore-pod");
    const storageClass = one(chart, "StorageClass").metadata.name;
    const snapshotClass = one(chart, "VolumeSnapshotClass").metadata.name;

    expect(pvc.kind).toBe("PersistentVolumeClaim");
    expect((pvc.spec as { storageClassName: string }).storageClassName).toBe(storageClass);
    const claimOf = (p: K8sObject) =>
      (p.spec as { volumes: { persistentVolumeClaim: { claimName: string } }[] }).volumes[0]
        ?.persistentVolumeClaim.claimName;
    expect(claimOf(pod)).toBe(pvc.metadata.name);

    expect(snapshot.apiVersion).toBe("snapshot.storage.k8s.io/v1");
    const snapSpec = snapshot.spec as {
      volumeSnapshotClassName: string;
      source: { persistentVolumeClaimName: string };
    };
    expect(snapSpec.volumeSnapshotClassName).toBe(snapshotClass);
    expect(snapSpec.source.persistentVolumeClaimName).toBe(pvc.metadata.name);

    const restoreSpec = restore.spec as {
      storageClassName: string;
      dataSource: { kind: string; name: string };
    };
    expect(restoreSpec.storageClassName).toBe(storageClass);
    expect(restoreSpec.dataSource).toMatchObject({ kind: "VolumeSnapshot", name: snapshot.metadata.name });
    expect(claimOf(reader)).toBe(restore.metadata.name);

    // The restore for a pod on another node: same snapshot, a reader kept away from the writer.
    const elsewhere = await example("restore-elsewhere");
    const farReader = await example("restore-elsewhere-pod");
    expect((elsewhere.spec as { dataSource: { name: string } }).dataSource.name).toBe(snapshot.metadata.name);
    expect(claimOf(farReader)).toBe(elsewhere.metadata.name);
    const anti = (
      farReader.spec as {
        affinity: {
          podAntiAffinity: {
            requiredDuringSchedulingIgnoredDuringExecution: {
              labelSelector: { matchLabels: Record<string, string> };
              topologyKey: string;
            }[];
          };
        };
      }
    ).affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0];
    expect(anti?.topologyKey).toBe("kubernetes.io/hostname");
    expect(pod.metadata.labels).toMatchObject(anti!.labelSelector.matchLabels);

    for (const p of [pod, reader, farReader]) {
      for (const c of (p.spec as { containers: { image: string }[] }).containers) {
        expect(c.image).toMatch(/:[0-9][\w.-]*$/);
      }
    }
  });

  it("names only example files that exist in the chart's NOTES and the e2e script", async () => {
    const notes = await readFile(
      path.join(REPO_ROOT, "charts", "snapblock", "templates", "NOTES.txt"),
      "utf8",
    );
    const e2e = await readFile(path.join(REPO_ROOT, "hack", "kind-e2e.sh"), "utf8");
    const named = [...`${notes}\n${e2e}`.matchAll(/examples\/([\w-]+)\.yaml/g)].map((m) => m[1] ?? "");
    expect(named.length).toBeGreaterThan(3);
    for (const name of new Set(named)) await example(name);
  });

  it("ships shell scripts that parse", async () => {
    for (const script of ["hack/kind-e2e.sh", "hack/render-deploy.sh", "deploy/engine-tls.sh"]) {
      await run("bash", ["-n", path.join(REPO_ROOT, script)]);
    }
  });
});
