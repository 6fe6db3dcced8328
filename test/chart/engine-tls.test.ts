/**
 * The engine CA the chart generates (Helm's genCA: an RSA key) and the one deploy/engine-tls.sh
 * makes (openssl: ECDSA) must work with the real engine service: the controller issues its own
 * client certificate from it and signs a node's request, the node serves with its certificate,
 * and the controller checks that the node it dials is the node it means.
 */
import { execFile } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT, one, render, type K8sObject } from "./helm-render.js";
import { silentLogger } from "../../pkg/log/index.js";
import { LocalEngine } from "../../pkg/engine-api/index.js";
import {
  EngineServer,
  RemoteEngine,
  createKeyAndRequest,
  issueOwnCertificate,
  signRequest,
  type PemPair,
  type TlsMaterial,
} from "../../pkg/engine-service/index.js";

const run = promisify(execFile);
const MiB = 2 ** 20;

let dir: string;
let engine: LocalEngine;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "snapblock-chart-tls-"));
  engine = new LocalEngine({
    nodeId: "node-a",
    poolDir: path.join(dir, "pool"),
    metadataFile: path.join(dir, "meta.json"),
    createIfMissing: { sizeBytes: 64 * MiB },
  });
  await engine.open();
});
afterAll(async () => {
  await engine.close();
  await rm(dir, { recursive: true, force: true });
});

/** The CA (certificate and key) in a rendered Secret. */
function caOf(objects: K8sObject[], name: string): PemPair {
  const data = one(objects, "Secret", name).data as Record<string, string>;
  const pem = (key: string): string => Buffer.from(data[key] ?? "", "base64").toString("utf8");
  expect(pem("ca.crt")).toBe(pem("tls.crt"));
  return { certPem: pem("tls.crt"), keyPem: pem("tls.key") };
}

/** What the controller and a node plugin do with a CA: the controller's own certificate, the node's. */
async function issued(ca: PemPair, nodeId: string): Promise<{ controller: TlsMaterial; node: TlsMaterial }> {
  const own = await issueOwnCertificate({ ca, identity: { role: "controller" }, days: 1 });
  const request = await createKeyAndRequest({ role: "node", nodeId });
  const nodeCert = await signRequest({ ca, csrPem: request.csrPem, days: 1 });
  const caCert = Buffer.from(ca.certPem);
  return {
    controller: {
      describe: "controller",
      current: () => ({ ca: caCert, cert: Buffer.from(own.certPem), key: Buffer.from(own.keyPem) }),
    },
    node: {
      describe: "node",
      current: () => ({ ca: caCert, cert: Buffer.from(nodeCert), key: Buffer.from(request.keyPem) }),
    },
  };
}

/** Starts the engine service of node-a with the node's material and calls it as the controller. */
async function handshake(node: TlsMaterial, controller: TlsMaterial, dial = "node-a"): Promise<string> {
  const server = await EngineServer.start({
    engine,
    snapshots: engine,
    address: "127.0.0.1:0",
    transport: { tls: node },
    version: "test",
    logger: silentLogger,
  });
  const client = new RemoteEngine({
    nodeId: dial,
    address: `127.0.0.1:${server.port}`,
    transport: { tls: controller },
    callTimeoutMs: 5000,
  });
  try {
    await client.listVolumes(); // a controller-only call
    return (await client.nodeInfo()).nodeId;
  } finally {
    client.close();
    await server.shutdown(1000);
  }
}

describe("engine service certificates", () => {
  it("issued from the CA the chart generates let the controller call a node plugin, naming it", async () => {
    const objects = await render();
    const ca = caOf(objects, "snapblock-engine-ca");
    const { controller, node } = await issued(ca, "node-a");
    expect(await handshake(node, controller)).toBe("node-a");
    // The controller dialling node-b at node-a's address is refused; so is another install's CA.
    await expect(handshake(node, controller, "node-b")).rejects.toThrow(/not node\/node-b/);
    const other = await issued(caOf(await render(), "snapblock-engine-ca"), "node-a");
    await expect(handshake(node, other.controller)).rejects.toThrow();
  });

  it("issued from the CA deploy/engine-tls.sh makes work the same way", async () => {
    // A stand-in kubectl that keeps the files the script puts into its Secret.
    const bin = path.join(dir, "bin");
    const out = path.join(dir, "script");
    await mkdir(bin, { recursive: true });
    await mkdir(out, { recursive: true });
    await writeFile(
      path.join(bin, "kubectl"),
      `#!/bin/sh
[ "$1" = "apply" ] && { cat >/dev/null; exit 0; }
for a in "$@"; do
  case "$a" in
    --from-file=*) spec="\${a#--from-file=}"; cp "\${spec#*=}" "${out}/\${spec%%=*}" ;;
  esac
done
`,
    );
    await chmod(path.join(bin, "kubectl"), 0o755);
    await run("bash", [path.join(REPO_ROOT, "deploy", "engine-tls.sh"), "snapblock", "30"], {
      env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ""}` },
    });
    const ca: PemPair = {
      certPem: await readFile(path.join(out, "tls.crt"), "utf8"),
      keyPem: await readFile(path.join(out, "tls.key"), "utf8"),
    };
    const { controller, node } = await issued(ca, "node-a");
    expect(await handshake(node, controller)).toBe("node-a");
  });

  it("carry the usages docs/cluster.md names for each identity, and its by-hand PKI works", async () => {
    const doc = await readFile(path.join(REPO_ROOT, "docs", "cluster.md"), "utf8");
    const section = doc.slice(doc.indexOf("## TLS and identities"), doc.indexOf("\n## Placement"));
    /** The usages column of the identity table, as extended key usage names. */
    const documented = (identity: string): string[] => {
      const row = section.split("\n").find((l) => l.startsWith(`| ${identity} `));
      const usages = row?.split("|")[3] ?? "";
      return ["client", "server"]
        .filter((u) => new RegExp(`\\b${u}\\b`).test(usages))
        .map((u) => (u === "client" ? EKU_CLIENT : EKU_SERVER))
        .sort();
    };
    expect(documented("controller")).toEqual([EKU_CLIENT]);
    expect(documented("a node")).toEqual([EKU_CLIENT, EKU_SERVER].sort());
    const ekus = (material: TlsMaterial) =>
      [...(new X509Certificate(material.current().cert).keyUsage ?? [])].sort();
    const { controller, node } = await issued(caOf(await render(), "snapblock-engine-ca"), "node-a");
    expect(ekus(controller)).toEqual(documented("controller"));
    expect(ekus(node)).toEqual(documented("a node"));

    // The openssl commands the section gives for a PKI outside Kubernetes, run as written.
    const script = /```sh\n([\s\S]*?)```/.exec(section)?.[1];
    expect(script).toBeDefined();
    const pki = path.join(dir, "by-hand");
    await mkdir(pki, { recursive: true });
    await run("bash", ["-euo", "pipefail", "-c", script!], { cwd: pki });
    const byHand = (file: string) => readFile(path.join(pki, file));
    const [caPem, caKey, nodeCert, nodeKey] = [
      await byHand("ca.crt"),
      await byHand("ca.key"),
      await byHand("node-a.crt"),
      await byHand("node-a.key"),
    ];
    const nodeByHand: TlsMaterial = {
      describe: "node",
      current: () => ({ ca: caPem, cert: nodeCert, key: nodeKey }),
    };
    expect(ekus(nodeByHand)).toEqual(documented("a node"));
    const own = await issueOwnCertificate({
      ca: { certPem: caPem.toString(), keyPem: caKey.toString() },
      identity: { role: "controller" },
      days: 1,
    });
    const controllerOfDoc: TlsMaterial = {
      describe: "controller",
      current: () => ({ ca: caPem, cert: Buffer.from(own.certPem), key: Buffer.from(own.keyPem) }),
    };
    expect(await handshake(nodeByHand, controllerOfDoc)).toBe("node-a");
  });
});

const EKU_SERVER = "1.3.6.1.5.5.7.3.1";
const EKU_CLIENT = "1.3.6.1.5.5.7.3.2";
