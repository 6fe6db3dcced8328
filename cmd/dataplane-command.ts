import type { CliContext } from "./cli-context.js";
import { DATAPLANE_VERB, dataplaneConfig } from "./dataplane-config.js";
import { runNode } from "./node-command.js";
import { runVerb } from "./verb-spec.js";

export { DATAPLANE_VERB };

/** `snapblock dataplane`: the flags (dataplane-config.ts), then the pool's side of a node (node-command.ts). */
export function dataplaneCommand(ctx: CliContext): Promise<number> {
  return runVerb(ctx)(DATAPLANE_VERB, (values) => {
    const config = dataplaneConfig(values, ctx.cwd);
    return runNode(ctx, config, { serve: "dataplane", socketPath: config.dataplaneSocket });
  });
}
