/**
 * Every flag the chart passes to `snapblock controller`, `node` and `dataplane` must be one the
 * binary accepts: the pods would crash-loop on an unknown flag, and no cluster runs in CI.
 */
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT, container, one, podSpec, render, type K8sObject } from "./helm-render.js";

const run = promisify(execFile);
const TSX = path.join(REPO_ROOT, "node_modules", ".bin", "tsx");
const BINARY = path.join(REPO_ROOT, "cmd", "snapblock.ts");

/** What the kubelet would substitute for $(VAR) in args. */
const ENV: Record<string, string> = {
  KUBE_NODE_NAME: "node-a",
  POD_IP: "10.0.0.7",
  POD_NAMESPACE: "snapblock",
  POD_NAME: "snapblock-controller-abc",
};

async function snapblock(args: string[]): Promise<string> {
  const { stdout } = await run(TSX, [BINARY, ...args], { cwd: REPO_ROOT });
  return stdout;
}

function flagName(arg: string): string {
  return arg.replace(/^--/, "").split("=")[0] ?? "";
}

/** The default values and one set that turns every optional flag the other way. */
const VALUE_SETS: Record<string, string[]> = {
  default: [],
  "non-default": [
    "metrics.enabled=false",
    "controller.kubeEvents=false",
    "node.poolSize=10G",
    "node.attach=nbdfuse-loop",
    "node.maxVolumesPerNode=20",
  ],
};

describe("the chart's command lines against the snapblock binary", () => {
  const rendered = new Map<string, K8sObject[]>();
  beforeAll(async () => {
    for (const [name, set] of Object.entries(VALUE_SETS)) rendered.set(name, await render({ set }));
  });

  for (const values of Object.keys(VALUE_SETS)) {
    for (const [kind, command, name] of [
      ["Deployment", "controller", "snapblock-controller"],
      ["DaemonSet", "node", "snapblock-node"],
      ["DaemonSet", "dataplane", "snapblock-dataplane"],
    ] as const) {
      it(`snapblock ${command} accepts every flag the ${kind} passes (${values} values)`, async () => {
        const objects = rendered.get(values) ?? [];
        const args = (container(podSpec(one(objects, kind, name)), "snapblock").args ?? []).map((a) =>
          a.replace(/\$\((\w+)\)/g, (_, v: string) => ENV[v] ?? `$(${v})`),
        );
        expect(args[0]).toBe(command);
        const usage = await snapblock([command, "--help"]);
        for (const a of args.slice(1)) {
          const name = flagName(a);
          const known = usage.includes(`--${name} `) || usage.includes(`--${name}\n`);
          expect(known, `--${name} is not in the usage of snapblock ${command}`).toBe(true);
        }
        // parseArgs is strict: an unknown flag or a value on a boolean fails before --help answers.
        expect(await snapblock([...args, "--help"])).toContain(`snapblock ${command}`);
      });
    }
  }
});
