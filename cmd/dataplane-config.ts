import path from "node:path";
import { NODE_VERB, nodeConfig, type NodeConfig } from "./node-config.js";
import { UsageError } from "./usage-error.js";
import { defineVerb, type FlagValues } from "./verb-spec.js";

/** `snapblock node`'s flags without those of the CSI node plugin (its socket, its paths, its limits). */
const {
  endpoint: _endpoint,
  "dataplane-socket": _socket,
  "max-volumes": _max,
  "path-root": _roots,
  ...NODE_FLAGS
} = NODE_VERB.flags;

export const DATAPLANE_VERB = defineVerb({
  command: "dataplane",
  summary:
    "The data plane of a node (cluster mode): owns this node's pool, its NBD exports and the block devices attached from them, serves the engine service to the controller (mutual TLS) and the data plane service to the CSI node plugin (`snapblock node --dataplane-socket`) on an owner-only unix socket. Outlives node plugin restarts.",
  flags: {
    socket: {
      type: "string",
      value: "PATH",
      defaultText: "DIR/dataplane/dataplane.sock",
      help: "unix socket of the data plane service (its directory is made 0700)",
    },
    ...NODE_FLAGS,
  },
});

export interface DataplaneConfig extends NodeConfig {
  /** The data plane service's socket. */
  dataplaneSocket: string;
}

/** `snapblock dataplane`'s flags, checked: `snapblock node`'s pool, TLS and announce flags, and the socket. */
export function dataplaneConfig(
  values: FlagValues<typeof DATAPLANE_VERB.flags>,
  cwd: string,
): DataplaneConfig {
  const { socket, ...rest } = values;
  const config = nodeConfig(
    {
      ...rest,
      endpoint: undefined,
      "path-root": undefined,
      "max-volumes": "0",
      "dataplane-socket": undefined,
    },
    cwd,
  );
  if (socket === "") throw new UsageError("--socket: give a path");
  const dataplaneSocket = path.resolve(
    cwd,
    socket ?? path.join(config.dataDir, "dataplane", "dataplane.sock"),
  );
  // The data plane serves no CSI socket: the socket its logs name is this one.
  return { ...config, socketPath: dataplaneSocket, dataplaneSocket };
}
