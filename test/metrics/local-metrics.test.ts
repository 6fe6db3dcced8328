import { execFileSync } from "node:child_process";
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, writeSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PARAM_FULL_COPY, callCsi } from "../../pkg/csi/index.js";
import { dashboardQueries, metricNamesOf } from "../../pkg/metrics/index.js";
import { BLOCK, MiB, createSnapshot, createVolume } from "../csi/csi-fixtures.js";
import { failureCode, removeDataDir, startLocal, type LocalProcess } from "../csi/local-process.js";
import { matching, scrape, total, type Sample } from "./exposition.js";
import { havePrometheus, startPrometheus, waitFor, type PrometheusServer } from "./prometheus-server.js";
import { rootWithTools } from "../node-tools.js";

/**
 * The real binary in local mode with /metrics on a free port, a workload over CSI (volumes,
 * snapshots, a full-copy restore, failed calls) and, where the node data path exists (root,
 * nbdfuse, loop devices), block I/O through NBD; then /metrics is scraped and a real Prometheus
 * scrapes it too. Without the node tools, the metrics only block I/O can move are left out of the
 * checks (listed in IO_ONLY) and the rest still runs.
 */
const haveNodeTools = rootWithTools(["nbdfuse", "losetup"]);

/** Metrics that have samples only after block I/O through an NBD export. */
const IO_ONLY =
  /^snapblock_(volume_(read|written)_bytes_total|volume_operations_total|volume_io_duration_seconds_bucket|engine_io_duration_seconds_bucket|nbd_request_duration_seconds_bucket|nbd_protocol_errors_total)$/;

const DASHBOARD = path.resolve(import.meta.dirname, "../../charts/snapblock/dashboards/snapblock.json");

let local: LocalProcess;
let port: number;
let before: Sample[];
let after: Sample[];
const staged: Array<{ volumeId: string; staging: string; target: string }> = [];

function metricsPort(log: string[]): number {
  for (const line of log) {
    if (!line.includes('"metrics listening"')) continue;
    const { address } = JSON.parse(line) as { address: string };
    return Number(address.split(":").pop());
  }
  throw new Error(`no "metrics listening" line in the log:\n${log.join("\n")}`);
}

async function stageBlock(volumeId: string): Promise<string> {
  const kubelet = path.join(local.dataDir, "kubelet");
  const staging = path.join(kubelet, "staging", volumeId.replace("/", "_"));
  const target = path.join(kubelet, "pods", "pod-metrics", "volume");
  mkdirSync(staging, { recursive: true });
  mkdirSync(path.dirname(target), { recursive: true });
  await callCsi(
    local.clients.node,
    "NodeStageVolume",
    { volumeId, stagingTargetPath: staging, volumeCapability: BLOCK },
    120_000,
  );
  staged.push({ volumeId, staging, target });
  await callCsi(local.clients.node, "NodePublishVolume", {
    volumeId,
    stagingTargetPath: staging,
    targetPath: target,
    volumeCapability: BLOCK,
  });
  return target;
}

function writeBlock(target: string, fill: number): void {
  const fd = openSync(target, "r+");
  try {
    writeSync(fd, Buffer.alloc(MiB, fill), 0, MiB, 0);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  // Read back past the page cache (O_DIRECT, which dd aligns for us), so the read reaches the engine.
  execFileSync("dd", [`if=${target}`, "of=/dev/null", "bs=64K", "count=16", "iflag=direct"], {
    stdio: "ignore",
  });
}

/** A client that sends client flags no server knows: the server must drop it (a protocol error). */
async function breakNbdProtocol(): Promise<void> {
  const dir = path.join(local.dataDir, "nbd");
  const socket = readdirSync(dir).find((f) => f.endsWith(".sock"));
  if (socket === undefined) throw new Error(`no NBD socket in ${dir}`);
  await new Promise<void>((resolve, reject) => {
    const conn = net.connect(path.join(dir, socket));
    let greeted = 0;
    conn.on("data", (chunk) => {
      greeted += chunk.length;
      // The fixed newstyle greeting is 18 bytes: NBDMAGIC, IHAVEOPT, handshake flags.
      if (greeted >= 18) conn.write(Buffer.from([0xff, 0xff, 0xff, 0xff]));
    });
    conn.on("close", () => resolve());
    conn.on("error", reject);
  });
}

beforeAll(async () => {
  local = await startLocal({
    args: [
      "--metrics-address",
      "127.0.0.1:0",
      "--pool-size",
      "1G",
      ...(haveNodeTools ? ["--path-root", "/"] : ["--attach", "none"]),
    ],
  });
  port = metricsPort(local.log);
  before = await scrape(port);
  const c = local.clients.controller;

  const volume = (
    await createVolume(c, {
      name: "pvc-metrics-a",
      volumeCapabilities: [BLOCK],
      capacityRange: { requiredBytes: 64 * MiB },
    })
  ).volume;
  // Failed calls: a request without a name, an unknown volume.
  await failureCode(createVolume(c, { volumeCapabilities: [BLOCK] }));
  await failureCode(
    callCsi(c, "ControllerExpandVolume", {
      volumeId: "local/no-such-volume",
      capacityRange: { requiredBytes: 128 * MiB },
    }),
  );
  const target = haveNodeTools ? await stageBlock(volume.volumeId) : undefined;
  if (target) writeBlock(target, 1);
  const snapshot = (await createSnapshot(c, "snap-metrics-a", volume.volumeId)).snapshot;
  // The first write after the snapshot goes to new chunks: redirect-on-write.
  if (target) writeBlock(target, 2);
  if (target) await breakNbdProtocol();
  await createVolume(c, {
    name: "pvc-metrics-restored",
    volumeCapabilities: [BLOCK],
    volumeContentSource: { snapshot: { snapshotId: snapshot.snapshotId } },
    parameters: { [PARAM_FULL_COPY]: "true" },
  });
  // A protected volume: its recovery-point series (count, lag, interval, deletions) exist.
  await createVolume(c, {
    name: "pvc-metrics-protected",
    volumeCapabilities: [BLOCK],
    capacityRange: { requiredBytes: 4 * MiB },
    parameters: { "snapblock.dev/protection": "1s for 1m" },
  });
  // The full copy runs in the background: wait until it reports progress.
  const copied = haveNodeTools ? MiB : 0;
  await waitFor(async () => {
    after = await scrape(port);
    return (
      total(after, "snapblock_engine_copies", { state: "running" }) === 0 &&
      total(after, "snapblock_engine_copy_bytes_total") >= copied
    );
  }, 30_000);
}, 180_000);

afterAll(async () => {
  if (!local) return;
  for (const s of staged.reverse()) {
    await callCsi(local.clients.node, "NodeUnpublishVolume", { volumeId: s.volumeId, targetPath: s.target });
    await callCsi(
      local.clients.node,
      "NodeUnstageVolume",
      { volumeId: s.volumeId, stagingTargetPath: s.staging },
      60_000,
    );
  }
  await local.stop();
  removeDataDir(local.dataDir);
});

describe("/metrics of snapblock local", () => {
  it("serves Node default metrics and every subsystem", () => {
    const names = new Set(after.map((s) => s.name));
    for (const n of [
      "process_cpu_seconds_total",
      "nodejs_eventloop_lag_p99_seconds",
      "snapblock_engine_pool_size_bytes",
      "snapblock_nbd_exports",
      "snapblock_csi_calls_total",
    ]) {
      expect(names.has(n), n).toBe(true);
    }
  });

  it("counts CSI calls by method and code, with durations, and none left in flight", () => {
    const ok = { method: "CreateVolume", code: "OK" };
    expect(
      total(after, "snapblock_csi_calls_total", ok) - total(before, "snapblock_csi_calls_total", ok),
    ).toBe(3);
    expect(
      total(after, "snapblock_csi_calls_total", { method: "CreateVolume", code: "INVALID_ARGUMENT" }),
    ).toBe(1);
    expect(
      total(after, "snapblock_csi_calls_total", { method: "ControllerExpandVolume", code: "NOT_FOUND" }),
    ).toBe(1);
    expect(total(after, "snapblock_csi_call_duration_seconds_count", ok)).toBe(
      total(after, "snapblock_csi_calls_total", ok),
    );
    expect(total(after, "snapblock_csi_calls_in_flight")).toBe(0);
  });

  it("reports the pool's volumes, snapshots, space and background copies", () => {
    expect(total(after, "snapblock_engine_volumes")).toBe(3);
    // The snapshot, and the protected volume's recovery points (one a second from its creation).
    expect(
      total(after, "snapblock_engine_snapshots") - total(after, "snapblock_volume_recovery_points"),
    ).toBe(1);
    expect(total(after, "snapblock_engine_pool_provisioned_bytes")).toBe(132 * MiB);
    expect(total(after, "snapblock_engine_pool_size_bytes")).toBe(1024 * MiB);
    expect(
      total(after, "snapblock_engine_pool_allocated_bytes") +
        total(after, "snapblock_engine_pool_free_bytes"),
    ).toBe(1024 * MiB);
    expect(matching(after, "snapblock_snapshot_size_bytes")).toHaveLength(1);
    expect(matching(after, "snapblock_volume_size_bytes")).toHaveLength(3);
    expect(total(after, "snapblock_engine_copies", { state: "done" })).toBe(1);
  });

  it("reports the protected volume's recovery points, and only its", () => {
    const protectedVolume = { volume: "pvc-metrics-protected" };
    const interval = matching(after, "snapblock_volume_protection_interval_seconds");
    expect(interval).toHaveLength(1);
    expect(interval[0]!.labels).toMatchObject(protectedVolume);
    expect(interval[0]!.value).toBe(1);
    const lag = matching(after, "snapblock_volume_protection_lag_seconds");
    expect(lag).toHaveLength(1);
    expect(lag[0]!.labels).toMatchObject(protectedVolume);
    // Nothing was written to it: no lag, whatever its points' age.
    expect(lag[0]!.value).toBeLessThan(60);
    expect(
      matching(after, "snapblock_volume_recovery_points_deleted_total", protectedVolume).map(
        (s) => s.labels.reason,
      ),
    ).toEqual(expect.arrayContaining(["thinning", "space"]));
  });

  it.skipIf(!haveNodeTools)("moves the I/O, ROW, space and NBD series with block I/O", () => {
    const moved = (name: string, labels: Record<string, string> = {}) =>
      total(after, name, labels) - total(before, name, labels);
    expect(moved("snapblock_volume_written_bytes_total")).toBeGreaterThanOrEqual(2 * MiB);
    expect(moved("snapblock_volume_read_bytes_total")).toBeGreaterThanOrEqual(MiB);
    expect(moved("snapblock_engine_io_bytes_total", { op: "write" })).toBeGreaterThanOrEqual(2 * MiB);
    expect(moved("snapblock_volume_operations_total", { op: "flush" })).toBeGreaterThanOrEqual(1);
    expect(moved("snapblock_engine_row_redirects_total")).toBeGreaterThan(0);
    expect(moved("snapblock_engine_pool_allocated_bytes")).toBeGreaterThanOrEqual(2 * MiB);
    // After the second write, the snapshot alone holds the first MiB.
    expect(total(after, "snapblock_engine_snapshot_exclusive_bytes")).toBeGreaterThanOrEqual(MiB);
    expect(total(after, "snapblock_engine_copy_bytes_total")).toBeGreaterThanOrEqual(MiB);
    expect(moved("snapblock_nbd_written_bytes_total")).toBeGreaterThanOrEqual(2 * MiB);
    expect(moved("snapblock_nbd_requests_total", { command: "write" })).toBeGreaterThan(0);
    expect(total(after, "snapblock_nbd_exports")).toBe(1);
    expect(total(after, "snapblock_nbd_protocol_errors_total", { kind: "bad_client_flags" })).toBe(1);
  });
});

describe.skipIf(!havePrometheus())("a real Prometheus scraping snapblock local", () => {
  let prometheus: PrometheusServer;
  beforeAll(async () => {
    prometheus = await startPrometheus(`127.0.0.1:${port}`);
  });
  afterAll(async () => {
    await prometheus?.stop();
  });

  it("has data for every metric a dashboard panel uses", async () => {
    const dashboard: unknown = JSON.parse(readFileSync(DASHBOARD, "utf8"));
    const names = [...new Set(dashboardQueries(dashboard).flatMap((q) => metricNamesOf(q.expr)))];
    const wanted = haveNodeTools ? names : names.filter((n) => !IO_ONLY.test(n));
    expect(wanted.length).toBeGreaterThan(20);
    let missing: string[] = wanted;
    await waitFor(async () => {
      const present = await Promise.all(
        missing.map(async (n) => (await prometheus.query(`count({__name__="${n}"})`)).length > 0),
      );
      missing = missing.filter((_, i) => !present[i]);
      return missing.length === 0;
    }, 30_000).catch(() => undefined); // the assertion below names what is missing
    expect(missing).toEqual([]);
    const up = await prometheus.query('up{job="snapblock"}');
    expect(up.map((r) => r.value[1])).toEqual(["1"]);
  });
});
