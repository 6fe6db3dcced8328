#!/usr/bin/env node
/**
 * The snapblock binary (docs/design.md section 1): wiring only. Subcommands:
 *   local                 Identity + Controller + Node over one pool on one socket
 *   node                  cluster mode: engine service + Identity + Node over this node's pool
 *   controller            cluster mode: Identity + Controller over the nodes' engine services
 *   volume <verb> ...     operator CLI: volumes over CSI
 *   snapshot <verb> ...   operator CLI: snapshots over CSI
 * This file and its subcommand files are the only place that reads argv and the environment.
 */
import { isSnapblockError } from "../pkg/errors/index.js";
import { UsageError } from "./usage-error.js";
import type { CliContext } from "./cli-context.js";
import { CONTROLLER_USAGE, controllerCommand } from "./controller-command.js";
import { LOCAL_USAGE, localCommand } from "./local-command.js";
import { NODE_USAGE, nodeCommand } from "./node-command.js";
import { OperatorError } from "./operator-connection.js";
import { packageVersion } from "./package-version.js";
import { SNAPSHOT_USAGE, snapshotCommand } from "./snapshot-command.js";
import { VOLUME_USAGE, volumeCommand } from "./volume-command.js";

const USAGE = `snapblock ${packageVersion()}: Kubernetes CSI driver for node-local block volumes with instant snapshots

usage:
${[LOCAL_USAGE, NODE_USAGE, CONTROLLER_USAGE, VOLUME_USAGE, SNAPSHOT_USAGE].map((u) => `  ${u.split("\n")[0]}`).join("\n")}

Run "snapblock <command> --help" for the options of a command.
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const ctx = (args: string[]): CliContext => ({
    args,
    cwd: process.cwd(),
    env: process.env,
    stdout: (t) => void process.stdout.write(t),
    stderr: (t) => void process.stderr.write(t),
    stderrIsTTY: process.stderr.isTTY,
  });
  switch (command) {
    case "local":
      return localCommand(ctx(rest));
    case "node":
      return nodeCommand(ctx(rest));
    case "controller":
      return controllerCommand(ctx(rest));
    case "volume":
    case "volumes":
      return volumeCommand(rest[0], ctx(rest.slice(1)));
    case "snapshot":
    case "snapshots":
      return snapshotCommand(rest[0], ctx(rest.slice(1)));
    case "--version":
    case "version":
      process.stdout.write(`${packageVersion()}\n`);
      return 0;
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (
      err instanceof UsageError ||
      (err instanceof TypeError && (err as { code?: string }).code?.startsWith("ERR_PARSE_ARGS"))
    ) {
      process.stderr.write(`snapblock: ${err.message}\n`);
      process.exitCode = 2;
    } else if (err instanceof OperatorError || isSnapblockError(err)) {
      process.stderr.write(`snapblock: ${err.message}\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(
        `snapblock: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
      );
      process.exitCode = 1;
    }
  },
);
