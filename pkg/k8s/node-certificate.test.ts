import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalEngine } from "../engine-api/index.js";
import {
  EngineServer,
  RemoteEngine,
  createCa,
  issueOwnCertificate,
  type PemPair,
  type TlsMaterial,
} from "../engine-service/index.js";
import { silentLogger } from "../log/index.js";
import { CsrSigner, NODE_NAME_EXTRA } from "./csr-signer.js";
import { FakeKube } from "./fake-kube.testing.js";
import { NodeCertificate } from "./node-certificate.js";

const SA = "system:serviceaccount:snapblock:snapblock-node";
const MiB = 2 ** 20;

describe("node certificates from the controller's signer (CertificateSigningRequests)", () => {
  let dir: string;
  let ca: PemPair;
  let caFile: string;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "snapblock-node-cert-"));
    ca = await createCa({ commonName: "engine-ca", days: 30 });
    caFile = path.join(dir, "ca.crt");
    writeFileSync(caFile, ca.certPem);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const setup = (nodeDir: string, runsOn: string[] | undefined, username = SA, nodeId = "node-a") => {
    const kube = new FakeKube();
    const signer = new CsrSigner({ api: kube, ca, nodeServiceAccount: SA, maxDays: 7, logger: silentLogger });
    const node = new NodeCertificate({
      api: kube.requester({ username, ...(runsOn ? { extra: { [NODE_NAME_EXTRA]: runsOn } } : {}) }),
      nodeId,
      dir: path.join(dir, nodeDir),
      caFile,
      days: 30,
      waitMs: 5000,
      pollMs: 10,
      logger: silentLogger,
    });
    // The controller's signer runs its passes while the node waits.
    const signing = setInterval(() => void signer.reconcile(), 5);
    return { kube, node, stop: () => clearInterval(signing) };
  };

  it("gives a node a certificate for its own node, which then serves the engine service over mTLS", async () => {
    const { kube, node, stop } = setup("a", ["node-a"]);
    try {
      await node.ensure();
    } finally {
      stop();
    }
    const [csr] = [...kube.csrs.values()];
    expect(csr).toMatchObject({ approved: true, signerName: "snapblock.dev/engine", username: SA });
    expect(csr?.certificatePem).toMatch(/BEGIN CERTIFICATE/);

    const engine = new LocalEngine({
      nodeId: "node-a",
      poolDir: path.join(dir, "pool"),
      metadataFile: path.join(dir, "meta.json"),
      createIfMissing: { sizeBytes: 16 * MiB },
    });
    await engine.open();
    const server = await EngineServer.start({
      engine,
      address: "127.0.0.1:0",
      transport: { tls: node },
      version: "test",
      logger: silentLogger,
    });
    const own = await issueOwnCertificate({ ca, identity: { role: "controller" }, days: 1 });
    const controllerTls: TlsMaterial = {
      describe: "test controller",
      current: () => ({
        ca: Buffer.from(ca.certPem),
        cert: Buffer.from(own.certPem),
        key: Buffer.from(own.keyPem),
      }),
    };
    const client = new RemoteEngine({
      nodeId: "node-a",
      address: `127.0.0.1:${server.port}`,
      transport: { tls: controllerTls },
      callTimeoutMs: 5000,
    });
    try {
      expect((await client.createVolume({ name: "v", sizeBytes: MiB, meta: {} })).name).toBe("v");
    } finally {
      client.close();
      await server.shutdown(1000);
      await engine.close();
    }

    // A restarted plugin keeps its certificate: no new request.
    const again = setup("a", ["node-a"]);
    try {
      await again.node.ensure();
    } finally {
      again.stop();
    }
    expect(again.kube.csrs.size).toBe(0);
  });

  it("denies a request for another node's certificate, naming why; the node fails to start with it", async () => {
    const { kube, node, stop } = setup("b", ["node-b"], SA, "node-a");
    try {
      await expect(node.ensure()).rejects.toThrow(
        /denied: the requester runs on node node-b but asks for a certificate of node node-a/,
      );
    } finally {
      stop();
    }
    expect([...kube.csrs.values()][0]).toMatchObject({ denied: true });
    expect([...kube.csrs.values()][0]?.certificatePem).toBeUndefined();
  });

  it("denies requests from another service account, or without the node the requester runs on", async () => {
    const wrongUser = setup("c", ["node-a"], "system:serviceaccount:default:intruder");
    try {
      await expect(wrongUser.node.ensure()).rejects.toThrow(/not by the node plugins' service account/);
    } finally {
      wrongUser.stop();
    }
    const noNode = setup("d", undefined);
    try {
      await expect(noNode.node.ensure()).rejects.toThrow(/does not say which node the requester runs on/);
    } finally {
      noNode.stop();
    }
  });

  it("renews when a third of the certificate's life is left", async () => {
    let now = new Date();
    const { kube, node, stop } = setup("e", ["node-a"]);
    const renewing = new NodeCertificate({
      api: kube.requester({ username: SA, extra: { [NODE_NAME_EXTRA]: ["node-a"] } }),
      nodeId: "node-a",
      dir: path.join(dir, "e"),
      caFile,
      days: 30,
      waitMs: 5000,
      pollMs: 10,
      logger: silentLogger,
      now: () => now,
    });
    try {
      await node.ensure();
      expect(kube.csrs.size).toBe(1);
      const first = node.current().cert.toString();
      await renewing.ensure(); // still young: kept
      expect(kube.csrs.size).toBe(1);
      now = new Date(Date.now() + 6 * 86_400_000); // the signer capped it at 7 days
      await renewing.ensure();
      expect(kube.csrs.size).toBe(2);
      expect(renewing.current().cert.toString()).not.toBe(first);
    } finally {
      stop();
    }
  });
});
