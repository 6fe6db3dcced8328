import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";

export const PROMETHEUS_BIN = "/usr/bin/prometheus";

export interface PrometheusServer {
  port: number;
  /** Result vector of an instant query (GET /api/v1/query). */
  query(expr: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>>;
  /** Stops the process (by its pid) and removes its storage. */
  stop(): Promise<void>;
  log: string[];
}

export function havePrometheus(): boolean {
  return existsSync(PROMETHEUS_BIN);
}

/**
 * A real Prometheus (the Debian package) on loopback, with a temporary TSDB and one scrape job for
 * the given target every second.
 */
export async function startPrometheus(target: string): Promise<PrometheusServer> {
  const dir = mkdtempSync(path.join(tmpdir(), "sb-prometheus-"));
  const port = await freePort();
  const config = path.join(dir, "prometheus.yml");
  writeFileSync(
    config,
    [
      "global:",
      "  scrape_interval: 1s",
      "  evaluation_interval: 1s",
      "scrape_configs:",
      "  - job_name: snapblock",
      "    static_configs:",
      `      - targets: ["${target}"]`,
      "",
    ].join("\n"),
  );
  const child = spawn(
    PROMETHEUS_BIN,
    [
      `--config.file=${config}`,
      `--storage.tsdb.path=${path.join(dir, "data")}`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  const log: string[] = [];
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => log.push(...chunk.split("\n")));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, "SIGTERM");
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  const base = `http://127.0.0.1:${port}`;
  try {
    await waitFor(async () => (await fetch(`${base}/-/ready`)).status === 200, 30_000);
  } catch (err) {
    await stop();
    throw new Error(`prometheus did not become ready: ${String(err)}\n${log.join("\n")}`);
  }
  return {
    port,
    log,
    stop,
    query: async (expr) => {
      const res = await fetch(`${base}/api/v1/query?query=${encodeURIComponent(expr)}`);
      const body = (await res.json()) as {
        status: string;
        error?: string;
        data?: { result: Array<{ metric: Record<string, string>; value: [number, string] }> };
      };
      if (body.status !== "success") throw new Error(`query ${expr}: ${body.error ?? res.status}`);
      return body.data?.result ?? [];
    },
  };
}

/** A port free right now (the kernel picks it); Prometheus binds it a moment later. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export async function waitFor(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = "never true";
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
      last = "not yet";
    } catch (err) {
      last = err; // not up yet: keep polling
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out (last: ${String(last)})`);
}
