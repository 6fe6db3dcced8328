#!/usr/bin/env node
/**
 * The snapblock binary (docs/design.md section 1): wiring only. Subcommands:
 *   local                 Identity + Controller + Node over one pool on one socket
 *   node                  cluster mode: the CSI node plugin (over a data plane, or with its own)
 *   dataplane             cluster mode: this node's pool, NBD exports, block devices, engine service
 *   controller            cluster mode: Identity + Controller over the nodes' engine services
 *   volume <verb> ...     operator CLI: volumes over CSI
 *   snapshot <verb> ...   operator CLI: snapshots over CSI
 *   replicas              cluster mode: where snapshots are kept, what is being copied
 * This file and its subcommand files are the only place that reads argv and the environment.
 * A subcommand's modules are imported when it runs: the operator CLI does not load the engine
 * service, Kubernetes or Prometheus code it never uses, which keeps each call quick.
 */
import { isSnapblockError } from "../pkg/errors/index.js";
import type { CliContext } from "./cli-context.js";
import { OperatorError } from "./operator-error.js";
import { packageVersion } from "./package-version.js";
import { UsageError } from "./usage-error.js";

const USAGE = `snapblock ${packageVersion()}: Kubernetes CSI driver for node-local block volumes with instant snapshots

usage:
  snapblock local [options]                 one process: CSI over one pool, no Kubernetes needed
  snapblock node --node-id ID [options]     cluster mode: the CSI node plugin
  snapblock dataplane --node-id ID [options]
                                            cluster mode: the node's data plane (pool, devices)
  snapblock controller (--nodes LIST | --nodes-file FILE | --kube-discovery) [options]
                                            cluster mode: the controller
  snapblock volume <verb> [options]         operator CLI: volumes (of snapblock local)
  snapblock snapshot <verb> [options]       operator CLI: snapshots
  snapblock replicas (--nodes LIST | --nodes-file FILE | --kube-discovery) [options]
                                            cluster mode: where snapshots are kept, what is copied

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
      return (await import("./local-command.js")).localCommand(ctx(rest));
    case "node":
      return (await import("./node-command.js")).nodeCommand(ctx(rest));
    case "dataplane":
      return (await import("./dataplane-command.js")).dataplaneCommand(ctx(rest));
    case "controller":
      return (await import("./controller-command.js")).controllerCommand(ctx(rest));
    case "volume":
    case "volumes":
      return (await import("./volume-command.js")).volumeCommand(rest[0], ctx(rest.slice(1)));
    case "snapshot":
    case "snapshots":
      return (await import("./snapshot-command.js")).snapshotCommand(rest[0], ctx(rest.slice(1)));
    case "replicas":
      return (await import("./replicas-command.js")).replicasCommand(ctx(rest));
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
    if (err instanceof UsageError) {
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
