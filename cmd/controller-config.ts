import { socketPathOf } from "../pkg/csi/index.js";
import { PROCESS_FLAGS, TLS_FLAGS, processConfig, secondsFlag, type ProcessConfig } from "./common-flags.js";
import { NODE_CERT_DAYS, type TlsFlags } from "./engine-tls-setup.js";
import { NODE_SOURCE_FLAGS, nodeSourceConfig, type NodeSource } from "./node-source.js";
import { UsageError } from "./usage-error.js";
import { defineVerb, type FlagValues } from "./verb-spec.js";

export const CONTROLLER_VERB = defineVerb({
  command: "controller",
  summary:
    "The controller of cluster mode: Identity + Controller on the CSI socket (for the sidecars), every volume operation sent to the engine service of the node that holds (or will hold) the volume. Give the nodes with exactly one of --nodes, --nodes-file or --kube-discovery.",
  flags: {
    endpoint: { type: "string", value: "EP", default: "unix:///csi/csi.sock", help: "CSI socket" },
    ...NODE_SOURCE_FLAGS,
    refresh: { type: "string", value: "SEC", default: "30", help: "how often node discovery is asked again" },
    "kube-events": {
      type: "boolean",
      default: false,
      help: "report failed placements, background copies and node pools filling up (80/90/100 %) as Events on the PVCs (needs the provisioner's --extra-create-metadata)",
    },
    "snapshot-schedules": {
      type: "boolean",
      default: false,
      help: "take the VolumeSnapshots of SnapshotSchedule objects (snapblock.dev/v1alpha1) and apply their retention (docs/snapshot-schedules.md)",
    },
    "schedule-poll": {
      type: "string",
      value: "SEC",
      default: "30",
      help: "how often SnapshotSchedules are listed again",
    },
    "pin-exported-points": {
      type: "boolean",
      default: false,
      help: "pin the recovery point that each pre-provisioned VolumeSnapshotContent of this driver names (spec.source.snapshotHandle), however it was written, so that thinning never deletes it (docs/protection.md)",
    },
    "pin-poll": {
      type: "string",
      value: "SEC",
      default: "10",
      help: "how often VolumeSnapshotContents are listed again",
    },
    "leader-elect": {
      type: "boolean",
      default: false,
      help: "with several replicas: serve only while holding the Lease",
    },
    "leader-elect-namespace": {
      type: "string",
      value: "NS",
      defaultText: "$POD_NAMESPACE or kube-system",
      help: "namespace of the Lease",
    },
    "leader-elect-name": {
      type: "string",
      value: "NAME",
      default: "snapblock-controller",
      help: "name of the Lease",
    },
    identity: {
      type: "string",
      value: "ID",
      defaultText: "$POD_NAME or the host name",
      help: "this replica in the Lease",
    },
    ...TLS_FLAGS,
    "tls-ca-key": {
      type: "string",
      value: "FILE",
      help: "instead of --tls-cert/--tls-key: the engine CA's key; the controller issues its own client certificate from it",
    },
    "sign-node-certificates": {
      type: "boolean",
      default: false,
      help: "with --tls-ca-key: approve and sign the node plugins' certificate requests (Kubernetes CSRs, signer snapblock.dev/engine) for their own node",
    },
    "node-service-account": {
      type: "string",
      value: "NS/NAME",
      defaultText: "$POD_NAMESPACE/snapblock-node",
      help: "the node plugins' service account",
    },
    "node-certificate-days": {
      type: "string",
      value: "N",
      default: String(NODE_CERT_DAYS),
      help: "longest node certificate issued",
    },
    "ca-configmap": {
      type: "string",
      value: "NAME",
      help: "publish the engine CA certificate (key ca.crt) in this ConfigMap of the controller's namespace, for the node plugins to mount",
    },
    "node-lost-after": {
      type: "string",
      value: "SEC",
      default: "600",
      help: "a node unreachable this long is gone: snapshots it held are copied again from the survivors",
    },
    "replica-check-every": {
      type: "string",
      value: "SEC",
      default: "30",
      help: "how often snapshot replicas are checked and repaired",
    },
    "call-timeout": { type: "string", value: "SEC", default: "60", help: "deadline of one engine call" },
    ...PROCESS_FLAGS,
  },
});

export interface ControllerConfig extends ProcessConfig {
  socketPath: string;
  nodes: NodeSource;
  refreshMs: number;
  callTimeoutMs: number;
  /** The TLS flags, for engine-tls-setup.ts (which reads the files and checks their identity). */
  tls: TlsFlags;
  kubeEvents: boolean;
  /** Set with --snapshot-schedules: how often SnapshotSchedules are listed. */
  snapshotSchedules: { pollMs: number } | undefined;
  /** Set with --pin-exported-points: how often VolumeSnapshotContents are listed. */
  pinExportedPoints: { pollMs: number } | undefined;
  /** The namespace of the Lease and of the CA ConfigMap. */
  namespace: string;
  /** Set with --leader-elect. */
  leaderElection: { name: string; identity: string } | undefined;
  /** Set with --sign-node-certificates: whose requests are signed, for how long at most. */
  signNodeCertificates: { serviceAccount: string; maxDays: number } | undefined;
  caConfigMap: string | undefined;
  lostAfterMs: number;
  replicaCheckMs: number;
}

/** `snapblock controller`'s flags, checked (pure: usage errors for anything wrong). */
export function controllerConfig(
  values: FlagValues<typeof CONTROLLER_VERB.flags>,
  context: { cwd: string; env: NodeJS.ProcessEnv; hostname: string },
): ControllerConfig {
  const nodes = nodeSourceConfig(values, context.cwd);
  const maxDays = Number(values["node-certificate-days"]);
  if (!(maxDays > 0))
    throw new UsageError(`--node-certificate-days ${values["node-certificate-days"]}: days > 0`);
  if ((values["sign-node-certificates"] || values["ca-configmap"]) && !values["tls-ca-key"])
    throw new UsageError(
      "--sign-node-certificates and --ca-configmap need the CA: --tls-ca with --tls-ca-key",
    );
  const namespace = values["leader-elect-namespace"] ?? context.env.POD_NAMESPACE ?? "kube-system";
  return {
    ...processConfig(values),
    socketPath: socketPathOf(values.endpoint, context.cwd),
    nodes,
    refreshMs: secondsFlag(values.refresh, "--refresh"),
    callTimeoutMs: secondsFlag(values["call-timeout"], "--call-timeout"),
    tls: {
      "tls-ca": values["tls-ca"],
      "tls-cert": values["tls-cert"],
      "tls-key": values["tls-key"],
      "tls-ca-key": values["tls-ca-key"],
      "insecure-loopback": values["insecure-loopback"],
    },
    kubeEvents: values["kube-events"],
    snapshotSchedules: values["snapshot-schedules"]
      ? { pollMs: secondsFlag(values["schedule-poll"], "--schedule-poll") }
      : undefined,
    pinExportedPoints: values["pin-exported-points"]
      ? { pollMs: secondsFlag(values["pin-poll"], "--pin-poll") }
      : undefined,
    namespace,
    leaderElection: values["leader-elect"]
      ? {
          name: values["leader-elect-name"],
          identity: values.identity ?? context.env.POD_NAME ?? context.hostname,
        }
      : undefined,
    signNodeCertificates: values["sign-node-certificates"]
      ? {
          serviceAccount: serviceAccountName(values["node-service-account"] ?? `${namespace}/snapblock-node`),
          maxDays,
        }
      : undefined,
    caConfigMap: values["ca-configmap"],
    lostAfterMs: secondsFlag(values["node-lost-after"], "--node-lost-after"),
    replicaCheckMs: secondsFlag(values["replica-check-every"], "--replica-check-every"),
  };
}

/** "NS/NAME" as the user name the API server gives that service account's tokens. */
function serviceAccountName(text: string): string {
  const m = /^([a-z0-9][a-z0-9.-]*)\/([a-z0-9][a-z0-9.-]*)$/.exec(text);
  if (!m) throw new UsageError(`--node-service-account ${text}: use NAMESPACE/NAME`);
  return `system:serviceaccount:${m[1]}:${m[2]}`;
}
