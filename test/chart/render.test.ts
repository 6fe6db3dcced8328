import { X509Certificate } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import {
  container,
  find,
  flag,
  hasFlag,
  helm,
  CHART_DIR,
  KUBE_VERSION,
  mountOf,
  one,
  podSpec,
  render,
  type K8sObject,
  type PodSpec,
  type PolicyRule,
} from "./helm-render.js";

/** The API group/version of every kind the chart may render. */
const API_VERSIONS: Record<string, string> = {
  ServiceAccount: "v1",
  Secret: "v1",
  ConfigMap: "v1",
  Service: "v1",
  StorageClass: "storage.k8s.io/v1",
  CSIDriver: "storage.k8s.io/v1",
  ClusterRole: "rbac.authorization.k8s.io/v1",
  ClusterRoleBinding: "rbac.authorization.k8s.io/v1",
  Role: "rbac.authorization.k8s.io/v1",
  RoleBinding: "rbac.authorization.k8s.io/v1",
  Deployment: "apps/v1",
  DaemonSet: "apps/v1",
  VolumeSnapshotClass: "snapshot.storage.k8s.io/v1",
  ServiceMonitor: "monitoring.coreos.com/v1",
  Certificate: "cert-manager.io/v1",
  Issuer: "cert-manager.io/v1",
  SnapshotMetadataService: "cbt.storage.k8s.io/v1beta1",
  CustomResourceDefinition: "apiextensions.k8s.io/v1",
  PrometheusRule: "monitoring.coreos.com/v1",
  NetworkPolicy: "networking.k8s.io/v1",
};

const DRIVER = "csi.snapblock.dev";

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "snapblock-chart-"));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function renderWith(values: unknown): Promise<K8sObject[]> {
  const file = path.join(tmp, `values-${Math.random().toString(36).slice(2)}.yaml`);
  await writeFile(file, stringify(values));
  return render({ valuesFiles: [file] });
}

function kinds(objects: K8sObject[]): string[] {
  return [...new Set(objects.map((o) => o.kind))].sort();
}

function controllerPod(objects: K8sObject[]): PodSpec {
  return podSpec(one(objects, "Deployment", "snapblock-controller"));
}

function nodePod(objects: K8sObject[]): PodSpec {
  return podSpec(one(objects, "DaemonSet", "snapblock-node"));
}

function dataplanePod(objects: K8sObject[]): PodSpec {
  return podSpec(one(objects, "DaemonSet", "snapblock-dataplane"));
}

/** Every image of every pod, init containers included. */
function images(objects: K8sObject[]): string[] {
  return objects
    .filter((o) => o.kind === "Deployment" || o.kind === "DaemonSet")
    .flatMap((o) => podSpec(o).containers.map((c) => c.image));
}

describe("default render", () => {
  let objects: K8sObject[];
  beforeAll(async () => {
    objects = await render();
  });

  it("renders valid YAML objects, each with the apiVersion of its kind and the standard labels", () => {
    expect(objects.length).toBeGreaterThan(10);
    for (const o of objects) {
      expect(API_VERSIONS[o.kind], `unexpected kind ${o.kind}`).toBeDefined();
      expect(o.apiVersion, `${o.kind}/${o.metadata.name}`).toBe(API_VERSIONS[o.kind]);
      expect(o.metadata.name).toMatch(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/);
      expect(o.metadata.labels?.["app.kubernetes.io/name"]).toBe("snapblock");
      expect(o.metadata.labels?.["app.kubernetes.io/instance"]).toBe("snapblock");
      expect(o.metadata.labels?.["app.kubernetes.io/managed-by"]).toBe("Helm");
      expect(o.metadata.labels?.["app.kubernetes.io/version"]).toBeDefined();
    }
    expect(kinds(objects)).toEqual(
      [
        "CSIDriver",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "CustomResourceDefinition",
        "DaemonSet",
        "Deployment",
        "Role",
        "RoleBinding",
        "Secret",
        "Service",
        "ServiceAccount",
        "StorageClass",
        "VolumeSnapshotClass",
      ].sort(),
    );
  });

  it("declares the CSIDriver the node plugin and the sidecars expect", () => {
    const driver = one(objects, "CSIDriver", DRIVER);
    expect(driver.spec).toEqual({
      attachRequired: false,
      podInfoOnMount: true,
      volumeLifecycleModes: ["Persistent"],
      fsGroupPolicy: "File",
      storageCapacity: true,
      requiresRepublish: false,
    });
  });

  it("runs the controller with the CSI sidecars on one socket emptyDir", () => {
    const pod = controllerPod(objects);
    expect(pod.containers.map((c) => c.name).sort()).toEqual(
      ["csi-provisioner", "csi-resizer", "csi-snapshotter", "liveness-probe", "snapblock"].sort(),
    );
    const snapblock = container(pod, "snapblock");
    expect(snapblock.args?.[0]).toBe("controller");
    expect(flag(snapblock, "endpoint")).toBe("unix:///csi/csi.sock");
    expect(flag(snapblock, "plugin-name")).toBe(DRIVER);
    expect(mountOf(pod, snapblock, "/csi").emptyDir).toBeDefined();
    for (const name of ["csi-provisioner", "csi-snapshotter", "csi-resizer"]) {
      const c = container(pod, name);
      expect(flag(c, "csi-address"), name).toBe("$(ADDRESS)");
      expect(c.env?.find((e) => e.name === "ADDRESS")?.value, name).toBe("/csi/csi.sock");
      expect(mountOf(pod, c, "/csi").name, name).toBe("socket-dir");
      expect(hasFlag(c, "leader-election"), name).toBe(true);
    }
    expect(flag(container(pod, "liveness-probe"), "csi-address")).toBe("/csi/csi.sock");
    expect(mountOf(pod, container(pod, "liveness-probe"), "/csi").name).toBe("socket-dir");
  });

  it("gives csi-provisioner topology, capacity tracking and extra create metadata", () => {
    const provisioner = container(controllerPod(objects), "csi-provisioner");
    expect(flag(provisioner, "feature-gates")).toBe("Topology=true");
    expect(hasFlag(provisioner, "strict-topology")).toBe(true);
    expect(hasFlag(provisioner, "enable-capacity")).toBe(true);
    // The Deployment owns the CSIStorageCapacity objects: pod -> ReplicaSet -> Deployment.
    expect(flag(provisioner, "capacity-ownerref-level")).toBe("2");
    expect(provisioner.env?.map((e) => e.name)).toEqual(expect.arrayContaining(["NAMESPACE", "POD_NAME"]));
    expect(hasFlag(provisioner, "extra-create-metadata")).toBe(true);
    expect(hasFlag(container(controllerPod(objects), "csi-snapshotter"), "extra-create-metadata")).toBe(true);
  });

  it("keeps socket paths consistent between the node plugin, the registrar and the kubelet", () => {
    const pod = nodePod(objects);
    const snapblock = container(pod, "snapblock");
    const registrar = container(pod, "node-driver-registrar");
    const probe = container(pod, "liveness-probe");
    expect(snapblock.args?.[0]).toBe("node");
    expect(flag(snapblock, "endpoint")).toBe("unix:///csi/csi.sock");
    expect(flag(registrar, "csi-address")).toBe("/csi/csi.sock");
    expect(flag(probe, "csi-address")).toBe("/csi/csi.sock");
    // All three see the same host directory at /csi, and the kubelet is told its host path.
    const pluginDir = `/var/lib/kubelet/plugins/${DRIVER}`;
    for (const c of [snapblock, registrar, probe]) {
      expect(mountOf(pod, c, "/csi").hostPath?.path, c.name).toBe(pluginDir);
    }
    expect(flag(registrar, "kubelet-registration-path")).toBe(`${pluginDir}/csi.sock`);
    expect(mountOf(pod, registrar, "/registration").hostPath?.path).toBe("/var/lib/kubelet/plugins_registry");
    // Staged and published mounts must propagate back to the host's kubelet directory.
    const kubelet = snapblock.volumeMounts?.find((m) => m.mountPath === "/var/lib/kubelet");
    expect(kubelet?.mountPropagation).toBe("Bidirectional");
    expect(mountOf(pod, snapblock, "/var/lib/kubelet").hostPath?.path).toBe("/var/lib/kubelet");
    expect(flag(snapblock, "path-root")).toBe("/var/lib/kubelet");
  });

  it("runs the data plane privileged with /dev, /sys and the pool's host path, and the node plugin over its socket", () => {
    const dpPod = dataplanePod(objects);
    const dp = container(dpPod, "snapblock");
    expect(dp.args?.[0]).toBe("dataplane");
    expect(dp.securityContext?.privileged).toBe(true);
    expect(mountOf(dpPod, dp, "/dev").hostPath?.path).toBe("/dev");
    expect(mountOf(dpPod, dp, "/sys").hostPath?.path).toBe("/sys");
    expect(flag(dp, "data")).toBe("/var/lib/snapblock");
    expect(mountOf(dpPod, dp, "/var/lib/snapblock").hostPath?.path).toBe("/var/lib/snapblock");
    expect(flag(dp, "node-id")).toBe("$(KUBE_NODE_NAME)");
    expect(flag(dp, "chunk-size")).toBe("64K");
    expect(flag(dp, "nbd-dead-conn-timeout")).toBe("120");
    expect(flag(dp, "log-level")).toBe("info");
    // It sees the node plugin's mounts (a snapshot freezes the staged filesystem), mounts nothing.
    const kubelet = dp.volumeMounts?.find((m) => m.mountPath === "/var/lib/kubelet");
    expect(kubelet).toMatchObject({ mountPropagation: "HostToContainer", readOnly: true });
    expect(dpPod.priorityClassName).toBe("system-node-critical");
    const pod = nodePod(objects);
    const snapblock = container(pod, "snapblock");
    expect(snapblock.securityContext?.privileged).toBe(true);
    expect(mountOf(pod, snapblock, "/dev").hostPath?.path).toBe("/dev");
    expect(flag(snapblock, "data")).toBe("/var/lib/snapblock");
    expect(flag(snapblock, "dataplane-socket")).toBe(flag(dp, "socket"));
    expect(flag(dp, "socket")).toBe("/var/lib/snapblock/dataplane/dataplane.sock");
    expect(mountOf(pod, snapblock, "/var/lib/snapblock").hostPath?.path).toBe("/var/lib/snapblock");
    expect(flag(snapblock, "node-id")).toBe("$(KUBE_NODE_NAME)");
    // The pool's flags belong to the data plane.
    for (const f of ["chunk-size", "engine-listen", "tls-bootstrap", "announce", "attach"])
      expect(hasFlag(snapblock, f), f).toBe(false);
    expect(pod.priorityClassName).toBe("system-node-critical");
    // It never calls the API server: no token in the pod.
    expect((pod as { automountServiceAccountToken?: boolean }).automountServiceAccountToken).toBe(false);
    // Only the node's two processes are privileged; the controller runs as a non-root user.
    const controller = controllerPod(objects);
    expect(controller.securityContext?.runAsNonRoot).toBe(true);
    for (const c of [...controller.containers, container(pod, "node-driver-registrar")]) {
      expect(c.securityContext?.privileged, c.name).toBeUndefined();
      expect(c.securityContext?.allowPrivilegeEscalation, c.name).toBe(false);
    }
  });

  it("pins every image (a tag that is not latest, or a digest)", () => {
    const all = images(objects);
    expect(all.length).toBe(9);
    for (const image of all) {
      expect(image, image).toMatch(/^[a-z0-9.-]+(\/[a-z0-9._-]+)+(:[A-Za-z0-9._-]+|@sha256:[a-f0-9]{64})$/);
      expect(image).not.toMatch(/:latest$/);
    }
    expect(all).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^registry\.k8s\.io\/sig-storage\/csi-provisioner:v5\./),
        expect.stringMatching(/^registry\.k8s\.io\/sig-storage\/csi-snapshotter:v8\./),
        expect.stringMatching(/^registry\.k8s\.io\/sig-storage\/csi-resizer:v1\./),
        expect.stringMatching(/^registry\.k8s\.io\/sig-storage\/csi-node-driver-registrar:v2\./),
        expect.stringMatching(/^registry\.k8s\.io\/sig-storage\/livenessprobe:v2\./),
      ]),
    );
  });

  it("grants RBAC without wildcards, to the release's two ServiceAccounts only", () => {
    const roles = [...find(objects, "ClusterRole"), ...find(objects, "Role")];
    expect(roles.length).toBeGreaterThan(0);
    for (const role of roles) {
      for (const rule of role.rules as PolicyRule[]) {
        for (const field of [rule.apiGroups, rule.resources, rule.verbs]) {
          expect(field.join(","), role.metadata.name).not.toContain("*");
        }
        // No sidecar needs Secrets (no secret parameters) or VolumeAttachments (no attach).
        expect(rule.resources).not.toContain("secrets");
        expect(rule.resources).not.toContain("volumeattachments");
      }
    }
    // Each binding names one ServiceAccount of the release; the node plugin's only role is its own.
    const bindings = [...find(objects, "ClusterRoleBinding"), ...find(objects, "RoleBinding")];
    const bound = (sa: string) =>
      bindings
        .filter((b) => (b.subjects as { name: string }[]).some((s) => s.name === sa))
        .map((b) => `${b.kind}/${(b.roleRef as { name: string }).name}`)
        .sort();
    for (const b of bindings) {
      for (const s of b.subjects as { kind: string; name: string; namespace: string }[]) {
        expect(`${s.kind}/${s.namespace}`).toBe("ServiceAccount/snapblock");
        expect(["snapblock-controller", "snapblock-node"]).toContain(s.name);
      }
    }
    expect(bound("snapblock-node")).toEqual(["ClusterRoleBinding/snapblock-node"]);
    expect(bound("snapblock-controller")).toEqual([
      "ClusterRoleBinding/snapblock-controller",
      "ClusterRoleBinding/snapblock-provisioner",
      "ClusterRoleBinding/snapblock-resizer",
      "ClusterRoleBinding/snapblock-snapshotter",
      "RoleBinding/snapblock-controller",
    ]);
    expect(nodePod(objects).serviceAccountName).toBe("snapblock-node");
    expect(controllerPod(objects).serviceAccountName).toBe("snapblock-controller");
  });

  it("grants each sidecar the rules its work needs", () => {
    const rules = (name: string, kind = "ClusterRole") => one(objects, kind, name).rules as PolicyRule[];
    const allows = (rs: PolicyRule[], group: string, resource: string, verb: string) =>
      rs.some((r) => r.apiGroups.includes(group) && r.resources.includes(resource) && r.verbs.includes(verb));
    const provisioner = rules("snapblock-provisioner");
    expect(allows(provisioner, "", "persistentvolumes", "create")).toBe(true);
    expect(allows(provisioner, "", "persistentvolumes", "delete")).toBe(true);
    expect(allows(provisioner, "storage.k8s.io", "csinodes", "watch")).toBe(true);
    expect(allows(provisioner, "snapshot.storage.k8s.io", "volumesnapshotcontents", "get")).toBe(true);
    expect(allows(provisioner, "", "persistentvolumeclaims", "delete")).toBe(false);
    const snapshotter = rules("snapblock-snapshotter");
    expect(allows(snapshotter, "snapshot.storage.k8s.io", "volumesnapshotcontents/status", "patch")).toBe(
      true,
    );
    expect(allows(snapshotter, "", "persistentvolumes", "get")).toBe(false);
    const resizer = rules("snapblock-resizer");
    expect(allows(resizer, "", "persistentvolumeclaims/status", "patch")).toBe(true);
    expect(allows(resizer, "", "persistentvolumes", "delete")).toBe(false);
    const local = rules("snapblock-controller", "Role");
    expect(allows(local, "coordination.k8s.io", "leases", "update")).toBe(true);
    expect(allows(local, "storage.k8s.io", "csistoragecapacities", "create")).toBe(true);
    expect(allows(local, "coordination.k8s.io", "leases", "create")).toBe(true);
    expect(allows(local, "", "pods", "get")).toBe(true);
    expect(allows(local, "", "pods", "list")).toBe(false);
    // snapblock controller lists Nodes (--kube-discovery); the node plugin patches them (--announce).
    // It also approves and signs the node plugins' certificate requests, for its own signer only,
    // and reads the VolumeSnapshotContents whose points it pins (--pin-exported-points), with a
    // Warning Event on one whose point is gone. The SnapshotSchedule rules that follow are checked
    // in schedules-and-alerts.test.ts.
    expect(rules("snapblock-controller").slice(0, 6)).toEqual([
      { apiGroups: [""], resources: ["nodes"], verbs: ["list"] },
      {
        apiGroups: ["certificates.k8s.io"],
        resources: ["certificatesigningrequests"],
        verbs: ["get", "list", "watch"],
      },
      {
        apiGroups: ["certificates.k8s.io"],
        resources: ["certificatesigningrequests/approval", "certificatesigningrequests/status"],
        verbs: ["update"],
      },
      {
        apiGroups: ["certificates.k8s.io"],
        resources: ["signers"],
        resourceNames: ["snapblock.dev/engine"],
        verbs: ["approve", "sign"],
      },
      {
        apiGroups: ["snapshot.storage.k8s.io"],
        resources: ["volumesnapshotcontents"],
        verbs: ["get", "list", "watch"],
      },
      { apiGroups: [""], resources: ["events"], verbs: ["create"] },
    ]);
    expect(rules("snapblock-controller")).toHaveLength(10);
    expect(hasFlag(container(controllerPod(objects), "snapblock"), "pin-exported-points")).toBe(true);
    // The node plugin asks for its own certificate; nothing else.
    expect(rules("snapblock-node")).toEqual([
      { apiGroups: [""], resources: ["nodes"], verbs: ["patch"] },
      {
        apiGroups: ["certificates.k8s.io"],
        resources: ["certificatesigningrequests"],
        verbs: ["create", "get"],
      },
    ]);
    // The CA ConfigMap: created, and only that one updated.
    expect(allows(local, "", "configmaps", "create")).toBe(true);
    expect(rules("snapblock-controller", "Role")).toContainEqual({
      apiGroups: [""],
      resources: ["configmaps"],
      resourceNames: ["snapblock-engine-ca"],
      verbs: ["get", "update"],
    });
    expect(one(objects, "Role", "snapblock-controller").metadata.namespace).toBe("snapblock");
  });

  it("creates the StorageClass and VolumeSnapshotClass for the driver", () => {
    const sc = one(objects, "StorageClass", "snapblock");
    expect(sc.provisioner).toBe(DRIVER);
    expect(sc.volumeBindingMode).toBe("WaitForFirstConsumer");
    expect(sc.allowVolumeExpansion).toBe(true);
    expect(sc.reclaimPolicy).toBe("Delete");
    expect(sc.parameters).toEqual({ "csi.storage.k8s.io/fstype": "ext4" });
    const vsc = one(objects, "VolumeSnapshotClass", "snapblock");
    expect(vsc.driver).toBe(DRIVER);
    expect(vsc.deletionPolicy).toBe("Delete");
  });

  it("generates the engine CA, mounts it in the controller only, and bootstraps each node's own certificate", () => {
    const ca = one(objects, "Secret", "snapblock-engine-ca");
    expect(ca.type).toBe("kubernetes.io/tls");
    const data = ca.data as Record<string, string>;
    expect(Object.keys(data).sort()).toEqual(["ca.crt", "tls.crt", "tls.key"]);
    expect(Buffer.from(data["tls.crt"] ?? "", "base64").toString()).toContain("BEGIN CERTIFICATE");
    expect(objects.filter((o) => o.kind === "Secret")).toHaveLength(1);
    const controllerSpec = controllerPod(objects);
    const nodeSpec = dataplanePod(objects);
    const controller = container(controllerSpec, "snapblock");
    const node = container(nodeSpec, "snapblock");
    // The node plugin has no TLS at all: the engine service is the data plane's.
    const plugin = container(nodePod(objects), "snapblock");
    expect(plugin.args?.some((a) => a.startsWith("--tls"))).toBe(false);
    expect(nodePod(objects).volumes.some((v) => v.configMap !== undefined || v.secret !== undefined)).toBe(
      false,
    );
    expect(mountOf(controllerSpec, controller, "/etc/snapblock/ca").secret?.secretName).toBe(
      "snapblock-engine-ca",
    );
    expect(flag(controller, "tls-ca")).toBe("/etc/snapblock/ca/tls.crt");
    expect(flag(controller, "tls-ca-key")).toBe("/etc/snapblock/ca/tls.key");
    expect(hasFlag(controller, "sign-node-certificates")).toBe(true);
    expect(flag(controller, "node-service-account")).toBe("snapblock/snapblock-node");
    expect(flag(controller, "ca-configmap")).toBe("snapblock-engine-ca");
    // The data plane never sees the CA's key: it mounts the ConfigMap with the CA certificate.
    const nodeCa = mountOf(nodeSpec, node, "/etc/snapblock/ca");
    expect(nodeCa.secret).toBeUndefined();
    expect(nodeCa.configMap?.name).toBe("snapblock-engine-ca");
    expect(nodeSpec.volumes.some((v) => v.secret !== undefined)).toBe(false);
    expect(flag(node, "tls-ca")).toBe("/etc/snapblock/ca/ca.crt");
    expect(hasFlag(node, "tls-bootstrap")).toBe(true);
    for (const c of [controller, node]) {
      expect(hasFlag(c, "tls-cert")).toBe(false);
      expect(hasFlag(c, "tls-key")).toBe(false);
      expect(hasFlag(c, "insecure-loopback")).toBe(false);
    }
  });

  it("lets the controller find the engines the node plugins announce, and elect one leader", () => {
    const controller = container(controllerPod(objects), "snapblock");
    expect(hasFlag(controller, "kube-discovery")).toBe(true);
    expect(hasFlag(controller, "nodes")).toBe(false);
    expect(hasFlag(controller, "nodes-file")).toBe(false);
    expect(hasFlag(controller, "leader-elect")).toBe(true);
    expect(flag(controller, "leader-elect-namespace")).toBe("$(POD_NAMESPACE)");
    expect(flag(controller, "identity")).toBe("$(POD_NAME)");
    expect(hasFlag(controller, "kube-events")).toBe(true);
    expect(controller.env?.map((e) => e.name)).toEqual(expect.arrayContaining(["POD_NAMESPACE", "POD_NAME"]));
    const node = container(dataplanePod(objects), "snapblock");
    const port = flag(node, "engine-listen")?.split(":").pop();
    expect(flag(node, "announce")).toBe(`$(POD_IP):${port}`);
    expect(node.env?.map((e) => e.name)).toContain("POD_IP");
    expect(node.ports?.find((p) => p.name === "engine")?.containerPort).toBe(Number(port));
  });

  it("exposes metrics on both components and ships the Grafana dashboard", () => {
    const service = one(objects, "Service", "snapblock-metrics");
    const spec = service.spec as {
      selector: Record<string, string>;
      ports: { name: string; port: number }[];
    };
    expect(spec.ports[0]?.name).toBe("metrics");
    expect(spec.selector).toEqual({
      "app.kubernetes.io/name": "snapblock",
      "app.kubernetes.io/instance": "snapblock",
    });
    for (const pod of [controllerPod(objects), dataplanePod(objects)]) {
      const c = container(pod, "snapblock");
      expect(flag(c, "metrics-address")).toBe("0.0.0.0:9808");
      expect(c.ports?.find((p) => p.name === "metrics")?.containerPort).toBe(9808);
    }
    // The node plugin's CSI metrics, on a port of its own; the Service reaches it by port name.
    const plugin = container(nodePod(objects), "snapblock");
    expect(flag(plugin, "metrics-address")).toBe("0.0.0.0:9809");
    expect(plugin.ports?.find((p) => p.name === "metrics")?.containerPort).toBe(9809);
    const dashboard = one(objects, "ConfigMap", "snapblock-dashboard");
    expect(dashboard.metadata.labels?.grafana_dashboard).toBe("1");
    const json = (dashboard.data as Record<string, string>)["snapblock.json"] ?? "";
    expect((JSON.parse(json) as { uid: string }).uid).toBe("snapblock");
  });

  it("gives every container resources and the liveness probes a port they can reach", () => {
    for (const pod of [controllerPod(objects), nodePod(objects)]) {
      const probe = container(pod, "liveness-probe");
      const port = Number(flag(probe, "http-endpoint")?.replace(/^:/, ""));
      const snapblock = container(pod, "snapblock");
      expect(snapblock.ports?.find((p) => p.name === "healthz")?.containerPort).toBe(port);
      expect((snapblock.livenessProbe?.httpGet as { port: string }).port).toBe("healthz");
      for (const c of pod.containers) expect((c as { resources?: unknown }).resources, c.name).toBeDefined();
    }
  });
});

describe("non-default values", () => {
  it("switches the optional objects off", async () => {
    const objects = await renderWith({
      storageClasses: [],
      volumeSnapshotClasses: [],
      metrics: { enabled: false, dashboard: { enabled: false } },
      controller: { storageCapacity: false, kubeEvents: false },
      snapshotSchedules: { enabled: false },
    });
    for (const kind of ["StorageClass", "VolumeSnapshotClass", "Service", "ServiceMonitor"]) {
      expect(find(objects, kind), kind).toEqual([]);
    }
    expect(find(objects, "ConfigMap", "snapblock-dashboard")).toEqual([]);
    const snapblock = container(controllerPod(objects), "snapblock");
    expect(flag(snapblock, "metrics-address")).toBe("none");
    expect(flag(container(nodePod(objects), "snapblock"), "metrics-address")).toBe("none");
    expect(hasFlag(snapblock, "kube-events")).toBe(false);
    // Events stay: the pins of VolumeSnapshotContents (always on) warn of a point that is gone.
    expect(hasFlag(snapblock, "pin-exported-points")).toBe(true);
    expect(one(objects, "ClusterRole", "snapblock-controller").rules as PolicyRule[]).toContainEqual({
      apiGroups: [""],
      resources: ["events"],
      verbs: ["create"],
    });
    expect(hasFlag(container(nodePod(objects), "snapblock"), "metrics-volume-series")).toBe(false);
    const provisioner = container(controllerPod(objects), "csi-provisioner");
    expect(hasFlag(provisioner, "enable-capacity")).toBe(false);
    expect((one(objects, "CSIDriver").spec as { storageCapacity: boolean }).storageCapacity).toBe(false);
    const role = one(objects, "Role").rules as PolicyRule[];
    expect(role.flatMap((r) => r.resources)).not.toContain("csistoragecapacities");
  });

  it("switches the ServiceMonitor on and renders several classes", async () => {
    const objects = await renderWith({
      metrics: { serviceMonitor: { enabled: true, labels: { release: "prom" } } },
      storageClasses: [
        { name: "snapblock-ext4", default: true },
        { name: "snapblock-xfs", fsType: "xfs", reclaimPolicy: "Retain", allowVolumeExpansion: false },
      ],
      volumeSnapshotClasses: [
        { name: "snapblock", default: true },
        { name: "snapblock-retain", deletionPolicy: "Retain" },
      ],
    });
    const monitor = one(objects, "ServiceMonitor");
    expect(monitor.metadata.labels?.release).toBe("prom");
    const service = one(objects, "Service", "snapblock-metrics");
    const matchLabels = (monitor.spec as { selector: { matchLabels: Record<string, string> } }).selector
      .matchLabels;
    for (const [k, v] of Object.entries(matchLabels)) expect(service.metadata.labels?.[k]).toBe(v);
    const ext4 = one(objects, "StorageClass", "snapblock-ext4");
    expect(
      (ext4.metadata.annotations as Record<string, string>)["storageclass.kubernetes.io/is-default-class"],
    ).toBe("true");
    const xfs = one(objects, "StorageClass", "snapblock-xfs");
    expect(xfs.parameters).toEqual({ "csi.storage.k8s.io/fstype": "xfs" });
    expect(xfs.reclaimPolicy).toBe("Retain");
    expect(xfs.allowVolumeExpansion).toBe(false);
    expect(xfs.metadata.annotations).toBeUndefined();
    expect(one(objects, "VolumeSnapshotClass", "snapblock-retain").deletionPolicy).toBe("Retain");
  });

  it("uses an existing CA Secret without creating any", async () => {
    const objects = await renderWith({
      tls: { mode: "existingSecret", existingSecret: { ca: "my-engine-ca" } },
    });
    expect(find(objects, "Secret")).toEqual([]);
    expect(find(objects, "Certificate")).toEqual([]);
    const controller = controllerPod(objects);
    expect(
      mountOf(controller, container(controller, "snapblock"), "/etc/snapblock/ca").secret?.secretName,
    ).toBe("my-engine-ca");
    await expect(renderWith({ tls: { mode: "existingSecret" } })).rejects.toThrow(
      /tls.existingSecret.ca is required/,
    );
  });

  it("asks cert-manager for the engine CA", async () => {
    const objects = await renderWith({ tls: { mode: "certManager" } });
    expect(find(objects, "Secret")).toEqual([]);
    expect(find(objects, "Issuer").map((o) => o.metadata.name)).toEqual(["snapblock-selfsigned"]);
    const [ca, ...more] = find(objects, "Certificate");
    expect(more).toEqual([]);
    expect(ca?.spec).toMatchObject({
      isCA: true,
      secretName: "snapblock-engine-ca",
      privateKey: { algorithm: "ECDSA", size: 256, encoding: "PKCS8" },
      issuerRef: { name: "snapblock-selfsigned" },
    });
    const controller = controllerPod(objects);
    expect(
      mountOf(controller, container(controller, "snapblock"), "/etc/snapblock/ca").secret?.secretName,
    ).toBe("snapblock-engine-ca");
  });

  it("follows a moved kubelet directory, pool path, chunk size, scheduling and images", async () => {
    const objects = await renderWith({
      logLevel: "debug",
      driverName: "csi.example.org",
      image: { repository: "registry.example.org/snapblock", digest: `sha256:${"a".repeat(64)}` },
      sidecars: { provisioner: { image: { tag: "v5.9.9" } } },
      node: {
        kubeletDir: "/var/snap/microk8s/common/var/lib/kubelet",
        dataDir: "/mnt/fast/snapblock",
        chunkSize: "128K",
        poolSize: "100G",
        nbdDeadConnTimeoutSeconds: 600,
        nodeSelector: { "snapblock.dev/disk": "true" },
        tolerations: [],
        priorityClassName: "",
      },
      controller: { priorityClassName: "system-cluster-critical", nodeSelector: { role: "infra" } },
    });
    const pod = nodePod(objects);
    const snapblock = container(pod, "snapblock");
    const dir = "/var/snap/microk8s/common/var/lib/kubelet";
    expect(mountOf(pod, snapblock, "/csi").hostPath?.path).toBe(`${dir}/plugins/csi.example.org`);
    expect(flag(container(pod, "node-driver-registrar"), "kubelet-registration-path")).toBe(
      `${dir}/plugins/csi.example.org/csi.sock`,
    );
    expect(mountOf(pod, snapblock, dir).hostPath?.path).toBe(dir);
    expect(mountOf(pod, container(pod, "node-driver-registrar"), "/registration").hostPath?.path).toBe(
      `${dir}/plugins_registry`,
    );
    expect(flag(snapblock, "path-root")).toBe(dir);
    expect(flag(snapblock, "data")).toBe("/mnt/fast/snapblock");
    expect(mountOf(pod, snapblock, "/mnt/fast/snapblock").hostPath?.path).toBe("/mnt/fast/snapblock");
    expect(flag(snapblock, "dataplane-socket")).toBe("/mnt/fast/snapblock/dataplane/dataplane.sock");
    const dpPod = dataplanePod(objects);
    const dp = container(dpPod, "snapblock");
    expect(flag(dp, "chunk-size")).toBe("128K");
    expect(flag(dp, "pool-size")).toBe("100G");
    expect(flag(dp, "nbd-dead-conn-timeout")).toBe("600");
    expect(flag(dp, "socket")).toBe("/mnt/fast/snapblock/dataplane/dataplane.sock");
    expect(mountOf(dpPod, dp, "/mnt/fast/snapblock").hostPath?.path).toBe("/mnt/fast/snapblock");
    // Wherever the node plugin runs, its data plane runs.
    expect(dpPod.nodeSelector).toEqual(pod.nodeSelector);
    expect(dpPod.tolerations).toBeUndefined();
    expect(flag(snapblock, "log-level")).toBe("debug");
    expect(flag(snapblock, "plugin-name")).toBe("csi.example.org");
    expect(pod.nodeSelector).toEqual({ "snapblock.dev/disk": "true" });
    expect(pod.tolerations).toBeUndefined();
    expect(pod.priorityClassName).toBeUndefined();
    expect(snapblock.image).toBe(`registry.example.org/snapblock@sha256:${"a".repeat(64)}`);
    const controller = controllerPod(objects);
    expect(controller.priorityClassName).toBe("system-cluster-critical");
    expect(controller.nodeSelector).toEqual({ role: "infra" });
    expect(container(controller, "csi-provisioner").image).toBe(
      "registry.k8s.io/sig-storage/csi-provisioner:v5.9.9",
    );
    expect(one(objects, "CSIDriver", "csi.example.org")).toBeDefined();
    expect(one(objects, "StorageClass").provisioner).toBe("csi.example.org");
    expect(one(objects, "VolumeSnapshotClass").driver).toBe("csi.example.org");
  });

  it("serves changed-block tracking when asked: sidecar, Service, certificate, SnapshotMetadataService, RBAC", async () => {
    expect(find(await render(), "SnapshotMetadataService")).toEqual([]); // off by default
    const objects = await renderWith({ snapshotMetadata: { enabled: true } });
    for (const o of objects) expect(o.apiVersion, o.kind).toBe(API_VERSIONS[o.kind]);
    const pod = controllerPod(objects);
    const sidecar = container(pod, "csi-snapshot-metadata");
    expect(sidecar.image).toMatch(/^registry\.k8s\.io\/sig-storage\/csi-snapshot-metadata:v\d/);
    // It reads the CSI SnapshotMetadata service on the controller's socket.
    expect(flag(sidecar, "csi-address")).toBe("/csi/csi.sock");
    expect(mountOf(pod, sidecar, "/csi").name).toBe("socket-dir");
    expect(mountOf(pod, container(pod, "snapblock"), "/csi").name).toBe("socket-dir");
    const tlsVolume = mountOf(pod, sidecar, "/etc/snapshot-metadata") as { secret?: { secretName: string } };
    expect(tlsVolume.secret?.secretName).toBe("snapblock-snapshot-metadata");
    expect(flag(sidecar, "tls-cert")).toBe("/etc/snapshot-metadata/tls.crt");
    // The Service reaches the sidecar's port; the object points clients at the Service.
    const service = one(objects, "Service", "snapblock-snapshot-metadata").spec as {
      ports: { port: number; targetPort: string }[];
      selector: Record<string, string>;
    };
    const port = (sidecar as { ports?: { name: string; containerPort: number }[] }).ports?.find(
      (p) => p.name === service.ports[0]!.targetPort,
    );
    expect(port?.containerPort).toBe(Number(flag(sidecar, "port")));
    expect(service.selector["app.kubernetes.io/component"]).toBe("controller");
    const sms = one(objects, "SnapshotMetadataService", DRIVER);
    const spec = sms.spec as { address: string; audience: string; caCert: string };
    expect(spec.address).toBe(`snapblock-snapshot-metadata.snapblock:${service.ports[0]!.port}`);
    expect(spec.audience).toBe("snapblock-snapshot-metadata");
    // The certificate is for the Service's name and signed by the CA the object hands clients.
    const secret = one(objects, "Secret", "snapblock-snapshot-metadata").data as Record<string, string>;
    const cert = new X509Certificate(Buffer.from(secret["tls.crt"]!, "base64"));
    const ca = new X509Certificate(Buffer.from(spec.caCert, "base64"));
    expect(cert.verify(ca.publicKey)).toBe(true);
    expect(cert.checkHost("snapblock-snapshot-metadata.snapblock.svc")).toBeDefined();
    expect(cert.checkHost("snapblock-snapshot-metadata.snapblock")).toBeDefined();
    // RBAC: the controller's ServiceAccount (the pod's) may review tokens and access, read its
    // object and resolve VolumeSnapshots; nothing more.
    const binding = one(objects, "ClusterRoleBinding", "snapblock-snapshot-metadata");
    expect((binding.subjects as { name: string }[]).map((x) => x.name)).toEqual([pod.serviceAccountName]);
    const rules = one(objects, "ClusterRole", "snapblock-snapshot-metadata").rules as PolicyRule[];
    const allows = (group: string, resource: string, verb: string) =>
      rules.some(
        (r) => r.apiGroups.includes(group) && r.resources.includes(resource) && r.verbs.includes(verb),
      );
    expect(allows("authentication.k8s.io", "tokenreviews", "create")).toBe(true);
    expect(allows("authorization.k8s.io", "subjectaccessreviews", "create")).toBe(true);
    expect(allows("cbt.storage.k8s.io", "snapshotmetadataservices", "get")).toBe(true);
    expect(allows("snapshot.storage.k8s.io", "volumesnapshotcontents", "get")).toBe(true);
    expect(allows("cbt.storage.k8s.io", "snapshotmetadataservices", "delete")).toBe(false);
    // Your own certificate instead: no Secret made, yours mounted, your CA in the object.
    const own = await renderWith({
      snapshotMetadata: {
        enabled: true,
        tls: { mode: "existingSecret", existingSecret: "my-cbt-tls", caCert: "PEM" },
      },
    });
    expect(find(own, "Secret", "snapblock-snapshot-metadata")).toEqual([]);
    const ownPod = controllerPod(own);
    const ownVolume = mountOf(ownPod, container(ownPod, "csi-snapshot-metadata"), "/etc/snapshot-metadata");
    expect((ownVolume as { secret?: { secretName: string } }).secret?.secretName).toBe("my-cbt-tls");
    expect((one(own, "SnapshotMetadataService").spec as { caCert: string }).caCert).toBe(
      Buffer.from("PEM").toString("base64"),
    );
  });

  it("refuses an unpinned image, an unknown TLS mode and values the schema rejects", async () => {
    const fails = async (set: string[]) => {
      const args = [
        "template",
        "x",
        CHART_DIR,
        "--kube-version",
        KUBE_VERSION,
        ...set.flatMap((s) => ["--set", s]),
      ];
      await expect(helm(args)).rejects.toThrow();
    };
    await fails(["sidecars.resizer.image.tag=latest"]);
    await fails(["image.tag=latest"]);
    await fails(["sidecars.livenessProbe.image.tag="]);
    await fails(["tls.mode=plaintext"]);
    await fails(["tls.mode=existingSecret"]);
    // values.schema.json: typos and values the binary would reject fail at install time.
    await fails(["logLevel=verbose"]);
    await fails(["node.attach=magic"]);
    await fails(["node.chunkSize=lots"]);
    await fails(["node.nbdDeadConnTimeoutSeconds=0"]);
    await fails(["storageClasses[0].name=x", "storageClasses[0].fsType=btrfs"]);
    await fails(["contoller.replicas=2"]);
    await fails(["snapshotMetadata.enabled=true", "snapshotMetadata.tls.mode=existingSecret"]);
    await fails(["snapshotMetadata.enabled=true", "snapshotMetadata.image.tag=latest"]);
  });
});

describe("upgrades", () => {
  it("roll the node plugin, and leave the data plane until its pod is deleted", async () => {
    const objects = await render();
    const strategy = (name: string) =>
      (one(objects, "DaemonSet", name).spec as { updateStrategy: unknown }).updateStrategy;
    expect(strategy("snapblock-node")).toEqual({
      type: "RollingUpdate",
      rollingUpdate: { maxUnavailable: 1 },
    });
    expect(strategy("snapblock-dataplane")).toEqual({ type: "OnDelete" });
    // No liveness probe restarts a data plane (it would break the node's volumes); readiness only.
    const dp = container(dataplanePod(objects), "snapblock");
    expect(dp.livenessProbe).toBeUndefined();
    expect(dp.readinessProbe).toMatchObject({ tcpSocket: { port: "engine" } });
    const changed = await renderWith({
      dataplane: { updateStrategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 1 } } },
    });
    expect(
      (one(changed, "DaemonSet", "snapblock-dataplane").spec as { updateStrategy: unknown }).updateStrategy,
    ).toEqual({
      type: "RollingUpdate",
      rollingUpdate: { maxUnavailable: 1 },
    });
  });
});

describe("what the node plugin and the network let in", () => {
  interface Peer {
    podSelector?: { matchLabels: Record<string, string> };
    namespaceSelector?: { matchLabels: Record<string, string> };
  }
  interface IngressRule {
    from?: Peer[];
    ports: { port: number; protocol: string }[];
  }
  const policy = (objects: K8sObject[], name: string) =>
    one(objects, "NetworkPolicy", name).spec as {
      podSelector: { matchLabels: Record<string, string> };
      policyTypes: string[];
      ingress: IngressRule[];
    };
  const component = (c: string) => ({
    "app.kubernetes.io/name": "snapblock",
    "app.kubernetes.io/instance": "snapblock",
    "app.kubernetes.io/component": c,
  });

  it("mounts /sys read-only: the data plane only reads device state there", async () => {
    const objects = await render();
    const snapblock = container(dataplanePod(objects), "snapblock");
    const sys = snapblock.volumeMounts?.find((m) => m.mountPath === "/sys");
    expect(sys?.readOnly).toBe(true);
    expect(mountOf(dataplanePod(objects), snapblock, "/sys").hostPath?.path).toBe("/sys");
    expect(container(nodePod(objects), "snapblock").volumeMounts?.some((m) => m.mountPath === "/sys")).toBe(
      false,
    );
  });

  it("renders no NetworkPolicy unless asked", async () => {
    expect(find(await render(), "NetworkPolicy")).toEqual([]);
  });

  it("lets the controller and the other node plugins reach the engine service, and only the metrics peers reach /metrics", async () => {
    const objects = await renderWith({
      networkPolicy: {
        enabled: true,
        metrics: { from: [{ namespaceSelector: { matchLabels: { team: "observability" } } }] },
      },
    });
    const nodeLabels = (
      one(objects, "DaemonSet", "snapblock-dataplane").spec as {
        template: { metadata: { labels: Record<string, string> } };
      }
    ).template.metadata.labels;
    const controllerLabels = (
      one(objects, "Deployment").spec as { template: { metadata: { labels: Record<string, string> } } }
    ).template.metadata.labels;
    const node = policy(objects, "snapblock-dataplane");
    expect(node.podSelector.matchLabels).toEqual(component("dataplane"));
    expect(nodeLabels).toMatchObject(component("dataplane"));
    expect(node.policyTypes).toEqual(["Ingress"]);
    expect(node.ingress).toEqual([
      {
        from: [
          { podSelector: { matchLabels: component("controller") } },
          { podSelector: { matchLabels: component("dataplane") } },
        ],
        ports: [{ port: 7443, protocol: "TCP" }],
      },
      {
        from: [{ namespaceSelector: { matchLabels: { team: "observability" } } }],
        ports: [{ port: 9808, protocol: "TCP" }],
      },
    ]);
    // The engine port in the policy is the one the data plane listens on.
    expect(flag(container(dataplanePod(objects), "snapblock"), "engine-listen")).toBe("0.0.0.0:7443");
    // The node plugin serves /metrics only.
    expect(policy(objects, "snapblock-node")).toMatchObject({
      podSelector: { matchLabels: component("node") },
      ingress: [
        {
          from: [{ namespaceSelector: { matchLabels: { team: "observability" } } }],
          ports: [{ port: 9809, protocol: "TCP" }],
        },
      ],
    });
    const controller = policy(objects, "snapblock-controller");
    expect(controller.podSelector.matchLabels).toEqual(component("controller"));
    expect(controllerLabels).toMatchObject(component("controller"));
    expect(controller.ingress).toEqual([
      {
        from: [{ namespaceSelector: { matchLabels: { team: "observability" } } }],
        ports: [{ port: 9808, protocol: "TCP" }],
      },
    ]);
  });

  it("lets nobody reach /metrics when no peers are given (an empty from would let everyone in)", async () => {
    for (const values of [
      { networkPolicy: { enabled: true, metrics: { from: [] } } },
      { networkPolicy: { enabled: true }, metrics: { enabled: false } },
    ]) {
      const objects = await renderWith(values);
      expect(policy(objects, "snapblock-controller").ingress).toEqual([]);
      expect(policy(objects, "snapblock-node").ingress).toEqual([]);
      const node = policy(objects, "snapblock-dataplane");
      expect(node.ingress).toHaveLength(1);
      expect(node.ingress[0]!.ports).toEqual([{ port: 7443, protocol: "TCP" }]);
    }
  });
});

describe("group snapshots", () => {
  it("are off by default: no flag, no group snapshot RBAC, no VolumeGroupSnapshotClass", async () => {
    const objects = await render();
    const snapshotter = controllerPod(objects).containers.find((c) => c.name === "csi-snapshotter")!;
    expect(snapshotter.args).not.toContain("--enable-volume-group-snapshots");
    expect(JSON.stringify(objects)).not.toContain("groupsnapshot.storage.k8s.io");
  });

  it("turn on csi-snapshotter's flag, its RBAC, and render the VolumeGroupSnapshotClasses", async () => {
    const objects = await renderWith({
      groupSnapshots: { enabled: true },
      volumeGroupSnapshotClasses: [
        { name: "fast", default: true, parameters: { "snapblock.dev/holdTimeout": "500ms" } },
        { name: "kept", deletionPolicy: "Retain" },
      ],
    });
    const snapshotter = controllerPod(objects).containers.find((c) => c.name === "csi-snapshotter")!;
    expect(snapshotter.args).toContain("--enable-volume-group-snapshots");
    const rules = one(objects, "ClusterRole", "snapblock-snapshotter").rules as PolicyRule[];
    const allows = (group: string, resource: string, verb: string) =>
      rules.some(
        (r) => r.apiGroups.includes(group) && r.resources.includes(resource) && r.verbs.includes(verb),
      );
    expect(allows("groupsnapshot.storage.k8s.io", "volumegroupsnapshotclasses", "watch")).toBe(true);
    expect(allows("groupsnapshot.storage.k8s.io", "volumegroupsnapshotcontents", "patch")).toBe(true);
    expect(allows("groupsnapshot.storage.k8s.io", "volumegroupsnapshotcontents/status", "update")).toBe(true);
    expect(allows("snapshot.storage.k8s.io", "volumesnapshotcontents", "create")).toBe(true);
    const classes = objects.filter((o) => o.kind === "VolumeGroupSnapshotClass");
    expect(classes.map((c) => [c.apiVersion, c.metadata.name, c.deletionPolicy])).toEqual([
      ["groupsnapshot.storage.k8s.io/v1beta1", "fast", "Delete"],
      ["groupsnapshot.storage.k8s.io/v1beta1", "kept", "Retain"],
    ]);
    expect(classes[0]!.driver).toBe(DRIVER);
    expect(classes[0]!.parameters).toEqual({ "snapblock.dev/holdTimeout": "500ms" });
    expect(classes[0]!.metadata.annotations).toEqual({
      "groupsnapshot.storage.kubernetes.io/is-default-class": "true",
    });
  });
});
