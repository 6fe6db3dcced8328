import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { makeTestPki } from "./test-certs.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

function snapblock(args: string[]): { code: number | null; stderr: string } {
  const r = spawnSync(process.execPath, ["--import", "tsx", "cmd/snapblock.ts", ...args], {
    cwd: ROOT,
    encoding: "utf8",
    timeout: 30_000,
  });
  return { code: r.status, stderr: r.stderr };
}

/** The cluster commands refuse unsafe or incomplete setups before doing anything. */
describe("snapblock node / controller flags", () => {
  it("refuses to run the engine service without TLS unless plaintext is asked for on loopback", () => {
    const noTls = snapblock(["node", "--node-id", "n1", "--data", "/nonexistent/x"]);
    expect(noTls.code).toBe(2);
    expect(noTls.stderr).toMatch(/--tls-ca with --tls-cert and --tls-key \(or --tls-bootstrap/);
    const wide = snapblock([
      "controller",
      "--nodes",
      "a=10.1.2.3:7443",
      "--insecure-loopback",
      "--endpoint",
      "unix:///tmp/x.sock",
    ]);
    expect(wide.code).toBe(1);
    expect(wide.stderr).toMatch(/loopback only/);
  });

  it("refuses a certificate that names someone else, and the CA key on a node", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "snapblock-flags-tls-"));
    try {
      const pki = makeTestPki(dir);
      const b = pki.node("node-b");
      const asOther = snapblock([
        "node",
        "--node-id",
        "node-a",
        "--data",
        path.join(dir, "d"),
        "--tls-ca",
        b.caFile,
        "--tls-cert",
        b.certFile,
        "--tls-key",
        b.keyFile,
      ]);
      expect(asOther.code).toBe(1);
      expect(asOther.stderr).toMatch(/names node\/node-b, but this process is node\/node-a/);
      const nodeAsController = snapblock([
        "controller",
        "--nodes",
        "a=127.0.0.1:1",
        "--tls-ca",
        b.caFile,
        "--tls-cert",
        b.certFile,
        "--tls-key",
        b.keyFile,
        "--endpoint",
        `unix://${dir}/c.sock`,
      ]);
      expect(nodeAsController.stderr).toMatch(/names node\/node-b, but this process is controller/);
      const caKeyOnNode = snapblock([
        "node",
        "--node-id",
        "node-a",
        "--data",
        path.join(dir, "d"),
        "--tls-ca",
        b.caFile,
        "--tls-ca-key",
        b.keyFile,
      ]);
      expect(caKeyOnNode.code).toBe(2);
      expect(caKeyOnNode.stderr).toMatch(/unknown option --tls-ca-key\nusage: snapblock node/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("needs exactly one node source and a node id", () => {
    expect(snapblock(["controller", "--insecure-loopback"]).stderr).toMatch(/exactly one of --nodes/);
    expect(snapblock(["node", "--insecure-loopback"]).stderr).toMatch(/--node-id is required/);
    expect(snapblock(["controller", "--nodes", "a=h", "--insecure-loopback"]).stderr).toMatch(/host:port/);
  });

  it("lists the new commands in the help", () => {
    const help = spawnSync(process.execPath, ["--import", "tsx", "cmd/snapblock.ts", "help"], {
      cwd: ROOT,
      encoding: "utf8",
    });
    expect(help.stdout).toMatch(/snapblock node --node-id/);
    expect(help.stdout).toMatch(/snapblock controller/);
  });
});
