import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callCsi, connectCsi } from "../../pkg/csi/index.js";
import { MOUNT_EXT4, MiB, createSnapshot, createVolume } from "../csi/csi-fixtures.js";
import { removeDataDir, waitReady } from "../csi/local-process.js";
import { ROOT } from "./run-cli.js";

/**
 * README's main command as a person runs it: `npm start` in a terminal, then Ctrl-C, which the
 * terminal sends as SIGINT to the whole foreground process group (npm, the shell, snapblock).
 * The clean shutdown must run (drain, flush, close the pool), the exit code be 0, and the next
 * start find nothing to replay; a SIGKILL, by contrast, must be seen as such at the next start.
 */
describe("npm start and Ctrl-C", () => {
  let dataDir: string;

  beforeAll(() => {
    dataDir = mkdtempSync(path.join(tmpdir(), "snapblock-npm-start-"));
    // `npm start` runs the built binary (npm ci builds it); build it again if the sources changed.
    if (newestSource() > builtAt()) execFileSync("npm", ["run", "build"], { cwd: ROOT, stdio: "ignore" });
  }, 180_000);

  afterAll(() => removeDataDir(dataDir));

  it("shuts down cleanly on SIGINT to the process group, and a restart replays nothing", async () => {
    const first = await npmStart(dataDir);
    const clients = connectCsi(first.socketPath);
    const volume = (
      await createVolume(clients.controller, {
        name: "ctrl-c",
        volumeCapabilities: [MOUNT_EXT4],
        capacityRange: { requiredBytes: 16 * MiB },
      })
    ).volume;
    await createSnapshot(clients.controller, "ctrl-c-snap", volume.volumeId);
    clients.close();
    await first.signalGroup("SIGINT");
    // snapblock's own exit; npm then ends itself by the same signal, as it does for any script.
    expect(first.log()).toContain(
      '"msg":"stopped","component":"snapblock-local","node":"local","exitCode":0',
    );
    expect(first.log()).not.toContain("second signal");

    const second = await npmStart(dataDir);
    expect(second.log()).toContain('"msg":"opened pool"');
    expect(second.log()).not.toContain("not closed cleanly");
    const again = connectCsi(second.socketPath);
    const listed = await callCsi<{ entries: Array<{ volume: { volumeId: string } }> }>(
      again.controller,
      "ListVolumes",
      {},
    );
    expect(listed.entries.map((e) => e.volume.volumeId)).toContain(volume.volumeId);
    // Acknowledged work in the journal only, then a kill.
    await createSnapshot(again.controller, "after-restart", volume.volumeId);
    again.close();
    // A kill skips the close: the next start says so (the check above can fail).
    await second.signalGroup("SIGKILL");
    const third = await npmStart(dataDir);
    expect(third.log()).toContain("not closed cleanly");
    const last = connectCsi(third.socketPath);
    const snaps = await callCsi<{ entries: Array<{ snapshot: { snapshotId: string } }> }>(
      last.controller,
      "ListSnapshots",
      {},
    );
    expect(snaps.entries.map((e) => e.snapshot.snapshotId)).toContain("local/after-restart");
    last.close();
    await third.signalGroup("SIGINT");
    expect(third.log()).toContain('"exitCode":0');
  }, 180_000);
});

interface NpmStart {
  socketPath: string;
  log(): string;
  /** Sends the signal to the process group, as a terminal does, and waits until npm has exited. */
  signalGroup(signal: NodeJS.Signals): Promise<void>;
}

async function npmStart(dataDir: string): Promise<NpmStart> {
  const socketPath = path.join(dataDir, "csi.sock");
  const child = spawn(
    "npm",
    [
      "start",
      "--",
      "--data",
      dataDir,
      "--attach",
      "none",
      "--metrics-address",
      "none",
      "--pool-size",
      "256M",
    ],
    // Its own process group, so that the signal reaches npm and everything under it, and only them.
    { cwd: ROOT, detached: true, stdio: ["ignore", "ignore", "pipe"] },
  );
  let text = "";
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => (text += chunk));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const clients = connectCsi(socketPath);
  try {
    await waitReady(clients, child, exited);
  } catch (err) {
    killGroup(child.pid!); // it may have exited already: the log below says why
    throw new Error(`npm start did not become ready: ${String(err)}\n${text}`);
  } finally {
    clients.close();
  }
  return {
    socketPath,
    log: () => text,
    signalGroup: async (signal) => {
      process.kill(-child.pid!, signal);
      await exited;
    },
  };
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, "SIGKILL");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
  }
}

function builtAt(): number {
  try {
    return statSync(path.join(ROOT, "dist/cmd/snapblock.js")).mtimeMs;
  } catch {
    return 0; // not built yet
  }
}

function newestSource(): number {
  let newest = 0;
  for (const dir of ["cmd", "pkg"]) {
    for (const entry of readdirSync(path.join(ROOT, dir), { recursive: true, withFileTypes: true })) {
      if (entry.isFile() && entry.name.endsWith(".ts"))
        newest = Math.max(newest, statSync(path.join(entry.parentPath, entry.name)).mtimeMs);
    }
  }
  return newest;
}
