/**
 * Runs the SnapshotSchedule reconciler once against the Kubernetes cluster of KUBECONFIG (or
 * ~/.kube/config), as the leader controller does on each pass, and prints what it did: the
 * snapshots it created and deleted, and each schedule's status afterwards. The reconciler is
 * tested against a fake API (pkg/k8s/snapshot-schedules.test.ts); this is the check against a real
 * API server (hack/README.md, "SnapshotSchedule against a real API server").
 *
 * usage: npx tsx hack/snapshot-schedules-once.ts [--dry-events]
 *   --dry-events   print the Events instead of writing them to the cluster
 *
 * It acts like the controller: it creates and deletes VolumeSnapshots. Scale the in-cluster
 * controller to 0 (or run it with snapshotSchedules.enabled=false) to be the only one acting.
 */
import { parseArgs } from "node:util";
import { KubeEventRecorder, SnapshotSchedules, connectKube } from "../pkg/k8s/index.js";
import { createLogger } from "../pkg/log/index.js";
import type { EventRecorder } from "../pkg/cluster/index.js";

const { values } = parseArgs({ options: { "dry-events": { type: "boolean", default: false } } });
const logger = createLogger({ level: "info", base: { component: "snapshot-schedules-once" } });
const api = await connectKube();
const printed: EventRecorder = {
  record: (e) =>
    console.log(`event ${e.type} ${e.reason} on ${e.involved.namespace}/${e.involved.name}: ${e.message}`),
};
const recorder = new KubeEventRecorder({ api, source: "snapblock-controller", logger });
const reconciler = new SnapshotSchedules({ api, logger, events: values["dry-events"] ? printed : recorder });
const outcomes = await reconciler.reconcileAll();
await recorder.flush();
const statuses = new Map(
  (await api.listSnapshotSchedules()).map((s) => [`${s.namespace}/${s.name}`, s.status]),
);
for (const o of outcomes) {
  console.log(
    JSON.stringify(
      {
        schedule: o.schedule,
        created: o.created,
        deleted: o.deleted,
        errors: o.errors,
        status: statuses.get(o.schedule),
      },
      null,
      2,
    ),
  );
}
if (outcomes.length === 0)
  console.log("no SnapshotSchedule in the cluster (kubectl apply -f examples/snapshot-schedule.yaml)");
process.exitCode = outcomes.some((o) => o.errors.length > 0) ? 1 : 0;
