/**
 * A process that holds a volume on a data plane (HoldVolume) and prints "held", then waits to be
 * killed: a node plugin killed in the middle of an unmount, as far as the data plane can tell.
 *
 *   node --import tsx test/cluster/hold-volume.ts SOCKET ENGINE_NAME
 */
import { DataPlaneClient } from "../../pkg/dataplane/index.js";
import { createLogger } from "../../pkg/log/index.js";

const [socketPath, engineName] = process.argv.slice(2);
if (!socketPath || !engineName) throw new Error("usage: hold-volume.ts SOCKET ENGINE_NAME");
const client = new DataPlaneClient({
  socketPath,
  logger: createLogger({ level: "error", write: () => undefined }),
});
await client.exclusive(engineName, async () => {
  process.stdout.write("held\n");
  await new Promise<void>(() => setInterval(() => undefined, 60_000));
});
