/**
 * The real `snapblock dataplane` process on kernel nbd (--attach nbd-client), restarted over the
 * record of a device attached through snapblock-nbd-netlink whose device is gone (this kernel has
 * no nbd module, so no /sys/block/nbdN: what a node sees when the device was torn down while the
 * data plane was away). The process must find the helper built in this tree, pass it the
 * configured dead-connection timeout, and report the volume broken, with what to do, instead of
 * reconnecting. The reconnect itself needs a kernel with nbd: see
 * test/node-layer/kernel-nbd-restart.test.ts for the data plane's side of it.
 */
import { mkdtempSync, promises as fs, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildHelper } from "../node-layer/nbd-netlink-fixtures.js";
import { startSplitNode, type SplitNode } from "./split-node.js";

const built = await buildHelper();
if ("skip" in built) console.warn(`skipping the kernel nbd data plane restart test: ${built.skip}`);

describe.skipIf("skip" in built)("snapblock dataplane restarted over a kernel nbd attachment", () => {
  let dir: string;
  let node: SplitNode | undefined;

  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), "sb-dp-knbd-"));
  });

  afterAll(async () => {
    if (node) {
      await node.dataplaneProcess.stop();
      node.close();
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it("uses the helper with the configured timeout, and reports a device that is gone as broken", async () => {
    node = await startSplitNode(dir);
    await node.engine.createVolume({ name: "data", sizeBytes: 64 * 2 ** 20, meta: {} });
    await node.dataplaneProcess.kill();

    // What an attach through the helper left behind, on nbd index 4000, which does not exist here.
    const dataDir = path.join(dir, "data");
    await fs.mkdir(path.join(dataDir, "attach"), { recursive: true, mode: 0o700 });
    const record = {
      version: 1,
      key: "data",
      kind: "nbd-client",
      socketPath: path.join(dataDir, "nbd", "data.sock"),
      exportName: "data",
      readOnly: false,
      expectedSizeBytes: 64 * 2 ** 20,
      phase: "attached",
      devicePath: "/dev/nbd4000",
      createdAt: new Date().toISOString(),
      nbd: { index: 4000, kernelPid: 1, via: "netlink", deadConnTimeoutSeconds: 120 },
    };
    await fs.writeFile(path.join(dataDir, "attach", "data.json"), JSON.stringify(record));

    const child = await node.startDataPlane({
      attachArgs: ["--attach", "nbd-client", "--nbd-dead-conn-timeout", "45"],
    });
    const lines = child.log.map((line) => JSON.parse(line) as Record<string, unknown>);
    const blockPath = lines.find((l) => l.msg === "node block path");
    expect(blockPath).toMatchObject({ kind: "nbd-client" });
    expect(blockPath?.reason).toBe(
      `nbd-client was configured; connecting with ${"helper" in built ? built.helper : ""}, dead-connection timeout 45 s: devices reconnect after a data plane restart`,
    );
    const broken = lines.find((l) => String(l.msg).includes("broken after the restart"));
    expect(broken).toMatchObject({ volume: "data", problems: ["nbd4000 is not connected any more"] });
    expect(await node.dataPlane.find("data")).toMatchObject({
      health: "broken",
      problems: ["nbd4000 is not connected any more"],
    });
    expect(await node.dataPlane.info()).toMatchObject({ attacherKind: "nbd-client", ready: true });
  }, 90_000);
});
