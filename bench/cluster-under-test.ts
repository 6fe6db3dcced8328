import { mkdirSync } from "node:fs";
import path from "node:path";
import { callCsi, TOPOLOGY_KEY } from "../pkg/csi/index.js";
import { RemoteEngine } from "../pkg/engine-service/index.js";
import { freePort, startSnapblock, type SnapblockProcess } from "../test/cluster/cluster-processes.js";
import { makeTestPki, type TestPki } from "../test/cluster/test-certs.js";

export interface BenchNode {
  id: string;
  poolSize: string;
  /** --pull-rate-limit of this node ("0": none). */
  pullRateLimit: string;
}

const BLOCK = { block: {}, accessMode: { mode: "SINGLE_NODE_WRITER" } };

/** Topology of one node, as csi-provisioner sends it after the scheduler picked that node. */
export const at = (node: string) => ({ requisite: [{ segments: { [TOPOLOGY_KEY]: node } }] });

/**
 * Real snapblock node plugins (each with its own pool, engine port and node certificate, block
 * devices through nbdfuse + loop) and a controller, over mutual TLS on loopback: what
 * test/cluster/replication.test.ts starts, for the benchmark.
 */
export class ClusterUnderTest {
  readonly nodes = new Map<string, SnapblockProcess>();
  private readonly inspectors = new Map<string, RemoteEngine>();
  private readonly staged = new Map<string, { node: string; staging: string; target: string }>();
  private controllerProcess: SnapblockProcess | undefined;

  /** The controller's log so far (JSON lines). */
  get controllerLog(): string[] {
    return this.controllerProcess?.log ?? [];
  }

  private constructor(
    readonly dir: string,
    readonly pki: TestPki,
    private readonly ports: Map<string, number>,
  ) {}

  static async start(o: {
    dir: string;
    nodes: BenchNode[];
    nodeOptions?: string[];
    /** More arguments for every node process (`snapblock node ...`). */
    nodeArgs?: string[];
  }): Promise<ClusterUnderTest> {
    const pki = makeTestPki(o.dir);
    const ports = new Map<string, number>();
    for (const n of o.nodes) ports.set(n.id, await freePort());
    const c = new ClusterUnderTest(o.dir, pki, ports);
    try {
      const started = await Promise.allSettled(
        o.nodes.map((n) =>
          startSnapblock(
            [
              "node",
              ...["--node-id", n.id, "--data", path.join(o.dir, n.id), "--pool-size", n.poolSize],
              ...["--attach", "nbdfuse-loop", "--engine-listen", `127.0.0.1:${ports.get(n.id)}`],
              ...["--metrics-address", "none", "--pull-rate-limit", n.pullRateLimit, "--overcommit", "4"],
              ...["--tls-ca", pki.node(n.id).caFile, "--tls-cert", pki.node(n.id).certFile],
              ...["--tls-key", pki.node(n.id).keyFile, "--path-root", path.join(o.dir, "kubelet")],
              ...(o.nodeArgs ?? []),
            ],
            path.join(o.dir, n.id, "csi.sock"),
            { nodeOptions: o.nodeOptions ?? [] },
          ),
        ),
      );
      // Every node that did start is stopped by close() below if another did not.
      started.forEach((r, i) => {
        if (r.status === "fulfilled") c.nodes.set(o.nodes[i]!.id, r.value);
      });
      const failed = started.find((r) => r.status === "rejected");
      if (failed) throw failed.reason;
      c.controllerProcess = await startSnapblock(
        [
          "controller",
          ...["--endpoint", `unix://${path.join(o.dir, "controller.sock")}`],
          ...["--nodes", o.nodes.map((n) => `${n.id}=127.0.0.1:${ports.get(n.id)}`).join(",")],
          ...["--tls-ca", pki.controller.caFile, "--tls-cert", pki.controller.certFile],
          ...["--tls-key", pki.controller.keyFile, "--metrics-address", "none"],
          ...["--replica-check-every", "1"],
        ],
        path.join(o.dir, "controller.sock"),
      );
    } catch (err) {
      await c.close();
      throw err;
    }
    return c;
  }

  node(id: string): SnapblockProcess {
    const p = this.nodes.get(id);
    if (!p) throw new Error(`no node ${id} in this cluster`);
    return p;
  }

  /** A CSI Controller call to the controller (what the sidecars do). */
  controller<Res>(method: string, request: object, deadlineMs = 120_000): Promise<Res> {
    return callCsi<Res>(this.controllerProcess!.clients.controller, method, request, deadlineMs);
  }

  createBlockVolume(name: string, o: { node: string; sizeBytes: number; fromSnapshot?: string }) {
    return this.controller<{ volume: { volumeId: string } }>("CreateVolume", {
      name,
      volumeCapabilities: [BLOCK],
      capacityRange: { requiredBytes: o.sizeBytes },
      accessibilityRequirements: at(o.node),
      ...(o.fromSnapshot ? { volumeContentSource: { snapshot: { snapshotId: o.fromSnapshot } } } : {}),
    });
  }

  /** The engine of a node as the controller sees it (pull progress, replicas). */
  engine(node: string): RemoteEngine {
    let r = this.inspectors.get(node);
    if (!r) {
      r = new RemoteEngine({
        nodeId: node,
        address: `127.0.0.1:${this.ports.get(node)}`,
        transport: { tls: this.pki.controller },
        callTimeoutMs: 10_000,
      });
      this.inspectors.set(node, r);
    }
    return r;
  }

  /** NodeStageVolume + NodePublishVolume of a raw block volume; returns the published device. */
  async stage(node: string, volumeId: string): Promise<string> {
    const key = volumeId.replace("/", "_");
    const staging = path.join(this.dir, "kubelet", node, "staging", key);
    const target = path.join(this.dir, "kubelet", node, "pods", key, "dev");
    mkdirSync(staging, { recursive: true });
    mkdirSync(path.dirname(target), { recursive: true });
    const client = this.node(node).clients.node;
    const cap = { volumeCapability: BLOCK };
    await callCsi(client, "NodeStageVolume", { volumeId, stagingTargetPath: staging, ...cap }, 120_000);
    this.staged.set(volumeId, { node, staging, target });
    await callCsi(client, "NodePublishVolume", {
      volumeId,
      stagingTargetPath: staging,
      targetPath: target,
      ...cap,
    });
    return target;
  }

  async unstage(volumeId: string): Promise<void> {
    const s = this.staged.get(volumeId);
    if (!s) return;
    this.staged.delete(volumeId);
    const client = this.node(s.node).clients.node;
    await callCsi(client, "NodeUnpublishVolume", { volumeId, targetPath: s.target });
    await callCsi(client, "NodeUnstageVolume", { volumeId, stagingTargetPath: s.staging }, 60_000);
  }

  /** The unix socket of a staged volume's NBD export on its node (pkg/node names it so). */
  exportSocket(node: string, engineName: string): string {
    return path.join(this.dir, node, "nbd", `${engineName}.sock`);
  }

  /** Unstages what is staged, stops the controller and the nodes (SIGTERM by pid). */
  async close(): Promise<void> {
    for (const volumeId of [...this.staged.keys()]) {
      await this.unstage(volumeId).catch((err: unknown) => {
        console.error(`# could not unstage ${volumeId}: ${String(err)}`);
      });
    }
    for (const r of this.inspectors.values()) r.close();
    const all = [this.controllerProcess, ...this.nodes.values()].filter((p) => p !== undefined);
    await Promise.all(all.map((p) => p.stop().catch(() => null)));
  }
}
