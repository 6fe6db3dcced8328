import path from "node:path";
import { parseHostPort } from "../pkg/engine-service/index.js";
import {
  POOL_FLAGS,
  PROCESS_FLAGS,
  TLS_FLAGS,
  poolConfig,
  processConfig,
  secondsFlag,
  usage,
  type PoolConfig,
  type ProcessConfig,
} from "./common-flags.js";
import type { TlsFlags } from "./engine-tls-setup.js";
import { sizeFlag } from "./size-flag.js";
import { UsageError } from "./usage-error.js";
import { defineVerb, type FlagValues } from "./verb-spec.js";

export const NODE_VERB = defineVerb({
  command: "node",
  summary:
    "The node plugin of cluster mode: owns this node's pool, serves the engine service to the controller (mutual TLS) and Identity + Node on the kubelet's CSI socket.",
  flags: {
    "node-id": {
      type: "string",
      value: "ID",
      help: "this node's id: part of every volume id and the topology (required; the Kubernetes node name)",
    },
    data: {
      type: "string",
      value: "DIR",
      default: "/var/lib/snapblock",
      help: "data directory: pool, CSI metadata, NBD sockets",
    },
    endpoint: { type: "string", value: "EP", defaultText: "unix://DIR/csi.sock", help: "CSI socket" },
    "dataplane-socket": {
      type: "string",
      value: "PATH",
      help: "be the CSI node plugin only (Identity + Node: filesystems and mounts), over the data plane (`snapblock dataplane`) serving this socket; without it, this process is its own data plane. The pool, TLS, engine and announce flags belong to the data plane then",
    },
    "engine-listen": {
      type: "string",
      value: "ADDR",
      default: "0.0.0.0:7443",
      help: "host:port of the engine service",
    },
    ...TLS_FLAGS,
    "tls-bootstrap": {
      type: "boolean",
      default: false,
      help: "instead of --tls-cert/--tls-key: make a key here and get this node's certificate from the controller's signer (a Kubernetes CSR), renewed",
    },
    "pull-rate-limit": {
      type: "string",
      value: "SIZE",
      default: "0",
      help: "bytes per second a background copy from other nodes may take (restores from another node's snapshot, replicas; 0: no limit)",
    },
    announce: {
      type: "string",
      value: "ADDR",
      help: "publish ADDR (host:port the controller dials, e.g. $(POD_IP):7443) and the pool's capacity on this node's Node object (snapblock.dev/ annotations)",
    },
    "announce-every": {
      type: "string",
      value: "SEC",
      default: "60",
      help: "how often to refresh the announcement",
    },
    ...POOL_FLAGS,
    ...PROCESS_FLAGS,
  },
});

export interface NodeConfig extends PoolConfig, ProcessConfig {
  /** Set: this process is the CSI node plugin only, over the data plane at this socket. */
  dataplaneSocket: string | undefined;
  engineListen: string;
  /** The TLS flags, for engine-tls-setup.ts (which reads the files and checks their identity). */
  tls: TlsFlags;
  /** Background pull bandwidth from other nodes, bytes per second (0: no limit). */
  pullBytesPerSecond: number;
  /** host:port to publish on the Node object; undefined: no announcement. */
  announce: string | undefined;
  announceMs: number;
}

/** `snapblock node`'s flags, checked (pure: usage errors for anything wrong). */
export function nodeConfig(values: FlagValues<typeof NODE_VERB.flags>, cwd: string): NodeConfig {
  const nodeId = values["node-id"];
  if (nodeId === undefined) throw new UsageError("--node-id is required (the Kubernetes node name)");
  if (values.announce !== undefined) usage(() => parseHostPort(values.announce!), "--announce");
  return {
    ...poolConfig({ ...values, "node-id": nodeId }, cwd),
    ...processConfig(values),
    dataplaneSocket:
      values["dataplane-socket"] === undefined ? undefined : path.resolve(cwd, values["dataplane-socket"]),
    engineListen: values["engine-listen"],
    tls: {
      "tls-ca": values["tls-ca"],
      "tls-cert": values["tls-cert"],
      "tls-key": values["tls-key"],
      "tls-bootstrap": values["tls-bootstrap"],
      "insecure-loopback": values["insecure-loopback"],
    },
    pullBytesPerSecond:
      values["pull-rate-limit"] === "0" ? 0 : sizeFlag(values["pull-rate-limit"], "--pull-rate-limit"),
    announce: values.announce,
    announceMs: secondsFlag(values["announce-every"], "--announce-every"),
  };
}
