import { spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { removeDataDir, startLocal } from "../csi/local-process.js";

const ROOT = path.resolve(import.meta.dirname, "../..");

function runLocal(args: string[]): { status: number | null; stderr: string } {
  const dataDir = mkdtempSync(path.join(tmpdir(), "sb-metrics-flags-"));
  try {
    const res = spawnSync(
      process.execPath,
      ["--import", "tsx", "cmd/snapblock.ts", "local", "--data", dataDir, ...args],
      { cwd: ROOT, encoding: "utf8", timeout: 30_000 },
    );
    return { status: res.status, stderr: res.stderr };
  } finally {
    removeDataDir(dataDir);
  }
}

describe("snapblock local metrics flags", () => {
  it.each([
    [["--metrics-address", "9808"], /--metrics-address: .*HOST:PORT/],
    [["--metrics-volume-series", "many"], /--metrics-volume-series many: a whole number >= 0/],
  ])("rejects %j as a usage error", (args, message) => {
    const res = runLocal(args);
    expect(res.status).toBe(2);
    expect(res.stderr).toMatch(message);
  });

  it("serves no /metrics with --metrics-address none", async () => {
    const local = await startLocal({ args: ["--metrics-address", "none", "--attach", "none"] });
    try {
      expect(local.log.some((l) => l.includes("metrics"))).toBe(false);
    } finally {
      await local.stop();
      removeDataDir(local.dataDir);
    }
  });

  it("keeps serving CSI when the metrics port is taken, and says so", async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const { port } = taken.address() as net.AddressInfo;
    try {
      const local = await startLocal({
        args: ["--metrics-address", `127.0.0.1:${port}`, "--attach", "none"],
      });
      try {
        expect(local.log.some((l) => l.includes("cannot serve metrics") && l.includes("EADDRINUSE"))).toBe(
          true,
        );
      } finally {
        await local.stop();
        removeDataDir(local.dataDir);
      }
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });
});
