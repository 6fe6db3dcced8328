/**
 * snapblock-nbd-netlink, the real program, as far as a kernel without the nbd module allows: it
 * builds, refuses bad arguments with clear errors, does the NBD handshake with snapblock's own
 * server, and its generic netlink lookup of the "nbd" family goes to the kernel for real - which
 * here answers ENOENT ("the nbd kernel module is not loaded"). Where the module is loaded, the
 * lookup must succeed instead. connect/reconfigure/status/disconnect against a real device need
 * the module and root: not exercised here (docs/node-attach.md, "Restarts").
 */
import { promises as fs } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NbdNetlinkError, NbdNetlinkHelper, parseHelperOutput } from "../../pkg/attach/index.js";
import type { Pool } from "../../pkg/engine/index.js";
import { runCommand, type CommandResult } from "../../pkg/mount/index.js";
import { MiB, buildHelper, createTestPool, nbdModuleLoaded, serveVolume } from "./nbd-netlink-fixtures.js";

const built = await buildHelper();
if ("skip" in built) console.warn(`skipping snapblock-nbd-netlink tests: ${built.skip}`);

let dir: string;
let pool: Pool;
let served: Awaited<ReturnType<typeof serveVolume>>;
let socketPath: string;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "snapblock-netlink-"));
  pool = await createTestPool(dir, { "vol-a": 16 * MiB });
  socketPath = path.join(dir, "vol-a.sock");
  served = await serveVolume(pool, "vol-a", socketPath);
});

afterAll(async () => {
  await served?.stop();
  await pool?.close();
  if (dir !== undefined) await fs.rm(dir, { recursive: true, force: true });
});

function helperPath(): string {
  if ("skip" in built) throw new Error(built.skip);
  return built.helper;
}

function runHelper(args: string[]): Promise<CommandResult> {
  return runCommand({ command: helperPath(), args, acceptExitCodes: [1, 2, 3, 4, 5, 6], timeoutMs: 30_000 });
}

describe.skipIf("skip" in built)("snapblock-nbd-netlink", () => {
  it("refuses bad arguments with a usage error that says what is wrong", async () => {
    const cases: Array<[string[], RegExp]> = [
      [[], /usage: snapblock-nbd-netlink COMMAND/],
      [["frobnicate"], /unknown command frobnicate/],
      [["connect", "--export", "v"], /connect needs --unix PATH/],
      [
        ["connect", "--unix", "relative.sock", "--export", "v"],
        /--unix relative.sock: an absolute socket path/,
      ],
      [
        ["connect", "--unix", `/${"x".repeat(120)}`, "--export", "v"],
        /longer than a unix socket path may be/,
      ],
      [
        ["connect", "--unix", "/s", "--export", "v", "--block-size", "1000"],
        /--block-size 1000: a power of two/,
      ],
      [["connect", "--unix", "/s", "--export", "v", "--connections", "0"], /--connections 0: from 1 to 16/],
      [
        ["connect", "--unix", "/s", "--export", "v", "--dead-conn-timeout", "-5"],
        /--dead-conn-timeout needs a whole number/,
      ],
      [["connect", "--unix", "/s", "--export", "v", "--index", "12x"], /--index 12x: a whole number/],
      [["connect", "--unix", "/s", "--export", "v", "--speed"], /--speed needs a value/],
      [["connect", "--unix", "/s", "--export", "v", "--speed", "9"], /unknown option --speed/],
      [["reconfigure", "--unix", "/s", "--export", "v"], /reconfigure needs --index N/],
      [["status"], /status needs --index N/],
      [["disconnect"], /disconnect needs --index N/],
      [["family", "--index", "1"], /family takes no options/],
    ];
    for (const [args, message] of cases) {
      const result = await runHelper(args);
      expect(result.exitCode, args.join(" ")).toBe(2);
      expect(result.stderr, args.join(" ")).toMatch(message);
      expect(result.stdout).toBe("");
    }
    // Through the TypeScript side: an INVALID_ARGUMENT error carrying the helper's sentence.
    const helper = new NbdNetlinkHelper(helperPath(), runCommand);
    await expect(helper.configured(-1)).rejects.toMatchObject({
      reason: "usage",
      code: "INVALID_ARGUMENT",
      message: "--index needs a whole number",
    });
  });

  it("does the fixed-newstyle handshake (NBD_OPT_GO) with snapblock's NBD server", async () => {
    const result = await runHelper(["handshake", "--unix", socketPath, "--export", "vol-a"]);
    expect(result.stderr).toBe("");
    expect(result.exitCode).toBe(0);
    const fields = parseHelperOutput(result.stdout);
    expect(Number(fields.get("size"))).toBe(16 * MiB);
    const flags = Number(fields.get("flags"));
    expect(flags & 1).toBe(1); // NBD_FLAG_HAS_FLAGS
    expect(flags & 2).toBe(0); // not read-only
    expect(flags & 4).toBe(4); // NBD_FLAG_SEND_FLUSH: the kernel then sends flushes
  });

  it("says which export or socket is wrong when the handshake cannot be done", async () => {
    const unknown = await runHelper(["handshake", "--unix", socketPath, "--export", "no-such-volume"]);
    expect(unknown.exitCode).toBe(5);
    expect(unknown.stderr).toMatch(
      /the NBD server refused export "no-such-volume" \(error 6: no export named/,
    );
    const missing = path.join(dir, "missing.sock");
    const gone = await runHelper(["handshake", "--unix", missing, "--export", "vol-a"]);
    expect(gone.exitCode).toBe(5);
    expect(gone.stderr).toMatch(new RegExp(`cannot connect to the NBD server at ${missing}: No such file`));
    const notNbd = path.join(dir, "not-nbd");
    const silent = net.createServer((socket) => {
      socket.on("error", () => undefined); // the helper hangs up once it has seen enough
      socket.end("HTTP/1.0 400 nope\r\n\r\n");
    });
    await new Promise<void>((resolve) => silent.listen(notNbd, resolve));
    try {
      const wrong = await runHelper(["handshake", "--unix", notNbd, "--export", "vol-a"]);
      expect(wrong.exitCode).toBe(5);
      expect(wrong.stderr).toMatch(/does not speak the NBD newstyle protocol|closed the connection/);
    } finally {
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  it("looks up the nbd generic netlink family in the kernel", async () => {
    const helper = new NbdNetlinkHelper(helperPath(), runCommand);
    if (nbdModuleLoaded()) {
      expect(await helper.family()).toBeGreaterThan(0);
      return;
    }
    // This kernel: CTRL_CMD_GETFAMILY answers ENOENT, which the helper turns into a sentence.
    const err = await helper.family().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdNetlinkError);
    expect(err).toMatchObject({
      reason: "no-module",
      code: "INTERNAL",
      message: 'the nbd kernel module is not loaded (no generic netlink family "nbd"; modprobe nbd)',
    });
    // Every kernel command looks the family up first: no NBD connection is opened for nothing.
    const counting = path.join(dir, "counting.sock");
    let connections = 0;
    const listener = net.createServer((socket) => {
      connections++;
      socket.destroy();
    });
    await new Promise<void>((resolve) => listener.listen(counting, resolve));
    try {
      for (const args of [
        ["connect", "--unix", counting, "--export", "vol-a", "--dead-conn-timeout", "120"],
        ["reconfigure", "--index", "0", "--unix", counting, "--export", "vol-a"],
        ["status", "--index", "0"],
        ["disconnect", "--index", "0"],
      ]) {
        const result = await runHelper(args);
        expect(result.exitCode, args[0]).toBe(3);
        expect(result.stderr, args[0]).toMatch(/the nbd kernel module is not loaded/);
      }
    } finally {
      await new Promise<void>((resolve) => listener.close(() => resolve()));
    }
    expect(connections).toBe(0);
    // And through the attacher's wrapper, as the data plane meets it on such a kernel.
    await expect(helper.configured(0)).rejects.toMatchObject({ reason: "no-module" });
  });
});
