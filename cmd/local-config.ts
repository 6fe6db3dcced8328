import path from "node:path";
import {
  POOL_FLAGS,
  PROCESS_FLAGS,
  poolConfig,
  processConfig,
  type PoolConfig,
  type ProcessConfig,
} from "./common-flags.js";
import { DEFAULT_DATA_DIR } from "./operator-connection.js";
import { defineVerb, type FlagValues } from "./verb-spec.js";

export const LOCAL_VERB = defineVerb({
  command: "local",
  summary: "Runs Identity, Controller and Node on one unix socket over one pool: no Kubernetes needed.",
  description:
    "The operator CLI (snapblock volume ..., snapshot ...) talks to it over the same socket. SIGINT/SIGTERM\nstops it cleanly; a second signal exits at once.",
  flags: {
    data: {
      type: "string",
      value: "DIR",
      default: DEFAULT_DATA_DIR,
      help: "data directory: pool, CSI metadata, sockets",
    },
    endpoint: { type: "string", value: "EP", defaultText: "unix://DIR/csi.sock", help: "CSI socket" },
    "node-id": {
      type: "string",
      value: "ID",
      default: "local",
      help: "node id, part of every volume id and the topology",
    },
    ...POOL_FLAGS,
    ...PROCESS_FLAGS,
  },
});

export interface LocalConfig extends PoolConfig, ProcessConfig {
  /** Where `snapblock volume attach` stages volumes (under the data directory). */
  attachDir: string;
  /** Where `snapblock volume export` puts its NBD sockets. */
  exportDir: string;
}

/** `snapblock local`'s flags, checked (pure: usage errors for anything wrong). */
export function localConfig(values: FlagValues<typeof LOCAL_VERB.flags>, cwd: string): LocalConfig {
  const pool = poolConfig(values, cwd);
  return {
    ...pool,
    ...processConfig(values),
    attachDir: path.join(pool.dataDir, "attached"),
    exportDir: path.join(pool.dataDir, "exports"),
  };
}
