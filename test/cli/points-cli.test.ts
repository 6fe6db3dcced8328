import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { removeDataDir, startLocal, type LocalProcess } from "../csi/local-process.js";
import { runCli } from "./run-cli.js";
import { rootWithTools } from "../node-tools.js";

/**
 * Recovery points with the CLI alone, against the real `snapblock local` and real NBD clients: a
 * writer writes through NBD and logs what it wrote and when; each retained point, restored with
 * `volume restore VOL@TIME`, holds what the log says was there at that time. The control-plane
 * part (protect, points, errors) runs everywhere; writing needs qemu-io.
 */
const haveTools = rootWithTools(["qemu-io"]);

let local: LocalProcess;
let work: string;
const cli = (...args: string[]) => runCli(local.socketPath, args, { cwd: work });
const ok = async (...args: string[]) => {
  const res = await cli(...args);
  if (res.code !== 0) throw new Error(`snapblock ${args.join(" ")} exited ${res.code}: ${res.stderr}`);
  return res.stdout;
};
interface Point {
  snapshotId: string;
  time: string;
  sizeBytes: number;
  exclusiveBytes?: number;
  pinned?: boolean;
}
const points = async (volume: string): Promise<Point[]> =>
  JSON.parse(await ok("volume", "points", volume, "--json")) as Point[];

/** Waits (the scheduler runs once a second) for a point taken after `afterMs`, 20 s at most by default. */
async function pointAfter(volume: string, afterMs: number, waitMs = 20_000): Promise<Point> {
  const until = Date.now() + waitMs;
  for (;;) {
    const p = (await points(volume)).find((x) => Date.parse(x.time) > afterMs);
    if (p) return p;
    if (Date.now() > until) throw new Error(`no point of ${volume} after ${new Date(afterMs).toISOString()}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

function qemuIo(uri: string, command: string, readOnly = false): string {
  return execFileSync("qemu-io", [...(readOnly ? ["-r"] : []), "-f", "raw", "-c", command, uri]).toString();
}

beforeAll(async () => {
  work = mkdtempSync(path.join(tmpdir(), "sb-points-"));
  local = await startLocal({ dataDir: path.join(work, "snapblock-data") });
});
afterAll(async () => {
  await local.stop();
  removeDataDir(work);
});

describe("recovery points with the CLI", () => {
  it("protects a volume, lists its points, and refuses what it cannot do with a clear message", async () => {
    await ok("volume", "create", "guarded", "--size", "4M", "--block");
    const bad = await cli("volume", "protect", "local/guarded", "--policy", "1m for 1s");
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/INVALID_ARGUMENT.*at least the interval/);
    const missing = await cli("volume", "protect", "local/guarded");
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/needs --policy/);
    expect(await ok("volume", "protect", "local/guarded", "--policy", "1s for 10m, 1m for 1h")).toBe(
      "volume local/guarded is protected: 1s for 10m, 1m for 1h\n",
    );
    const first = await pointAfter("local/guarded", 0);
    expect(first.snapshotId).toMatch(/^local\/rp--\d+-\d+$/);
    expect(first.sizeBytes).toBe(4 << 20);
    expect(await ok("volume", "get", "local/guarded")).toMatch(
      /protection:\s+1s for 10m, 1m for 1h \(\d+ recovery point\(s\); snapblock volume points\)/,
    );
    const table = await ok("volume", "points", "local/guarded");
    expect(table).toMatch(/^TIME\s+POINT ID\s+EXCLUSIVE\s+PINNED/);
    expect(first.pinned).toBe(false);
    expect(table).toContain(first.snapshotId);
    // `snapshot list` leaves points out unless asked, and says so.
    const snaps = await cli("snapshot", "list", "--volume", "local/guarded");
    expect(snaps.stdout).not.toContain(first.snapshotId);
    expect(snaps.stderr).toMatch(/recovery point\(s\) not shown/);
    expect(await ok("snapshot", "list", "--volume", "local/guarded", "--points")).toContain(first.snapshotId);
    // Before the first point: nothing to restore, and the message says what there is.
    const early = await cli("volume", "restore", "local/guarded@2020-01-01T00:00:00Z", "too-early");
    expect(early.code).not.toBe(0);
    expect(early.stderr).toMatch(/no recovery point at or before 2020-01-01T00:00:00.000Z; its oldest is/);
    const zoneless = await cli("volume", "restore", "local/guarded@2026-11-30T15:04:05", "x");
    expect(zoneless.code).toBe(2);
    expect(zoneless.stderr).toMatch(/RFC 3339 with a zone/);
    const unknown = await cli("volume", "points", "local/nope");
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toMatch(/NOT_FOUND/);
    const toKubernetes = (...more: string[]) =>
      cli("volume", "points", "local/guarded", "--at", first.time, "--kubernetes", ...more);
    // A bad object name is refused before anything is pinned.
    const badName = await toKubernetes("--name", "Bad_Name");
    expect(badName.code).toBe(2);
    // The objects that make the point a VolumeSnapshot in Kubernetes; the point is pinned.
    const exported = await toKubernetes("--namespace", "apps");
    expect(exported.code).toBe(0);
    expect(exported.stderr).toContain(`pinned recovery point ${first.snapshotId}`);
    const yaml = exported.stdout;
    expect(yaml).toContain("deletionPolicy: Delete");
    expect(yaml).toContain(`snapshotHandle: "${first.snapshotId}"`);
    expect((await points("local/guarded")).find((p) => p.snapshotId === first.snapshotId)?.pinned).toBe(true);
    // The table marks it.
    const table2 = await ok("volume", "points", "local/guarded");
    expect(table2.split("\n").find((l) => l.includes(first.snapshotId))).toMatch(/\sPINNED$/);
    // Released by volume unpin (by VOLUME@TIME or by id), idempotently.
    expect(await ok("volume", "unpin", `local/guarded@${first.time}`)).toMatch(
      /is not pinned: its policy may thin it/,
    );
    expect(JSON.parse(await ok("volume", "unpin", first.snapshotId, "--json"))).toEqual({
      snapshotId: first.snapshotId,
      pinned: false,
    });
    const notPoint = await cli("volume", "unpin", "local/guarded");
    expect(notPoint.code).toBe(2);
    expect(notPoint.stderr).toMatch(/neither VOLUME_ID@TIME nor a recovery point id/);
    expect(yaml).toContain('driver: "csi.snapblock.dev"');
    expect(yaml).toMatch(/kind: VolumeSnapshot\n[\s\S]*namespace: "apps"[\s\S]*volumeSnapshotContentName:/);
    expect(await ok("volume", "protect", "local/guarded", "--policy", "off")).toMatch(
      /not protected any more/,
    );
    expect(await ok("volume", "get", "local/guarded")).toMatch(
      /protection:\s+off \(\d+ recovery point\(s\) kept\)/,
    );
  });

  it.skipIf(!haveTools)(
    "restores each retained point with the content a writer logged at its time",
    async () => {
      await ok("volume", "create", "logged", "--size", "4M", "--block");
      await ok("volume", "protect", "local/logged", "--policy", "1s for 10m");
      const uri = (await ok("volume", "export", "local/logged")).trim();
      const log: Array<{ value: number; started: number; done: number }> = [];
      for (let value = 1; value <= 4; value++) {
        const started = Date.now();
        qemuIo(uri, `write -P ${value} 0 64k`);
        const done = Date.now();
        log.push({ value, started, done });
        // The next write waits for a point taken after this one started. A point taken while the
        // write was in flight may already hold it, and then no later point comes (the volume is
        // idle again): that is fine, the check below accepts either value for such a point.
        await pointAfter("local/logged", started);
        await pointAfter("local/logged", done, 2_000).catch(() => undefined);
      }
      await ok("volume", "unexport", "local/logged");
      const retained = (await points("local/logged")).filter((p) => Date.parse(p.time) > log[0]!.done);
      // Writes 2-4 each started after a point had been waited for, and each was followed by one.
      expect(retained.length).toBeGreaterThanOrEqual(3);
      for (const [i, p] of retained.entries()) {
        const at = Date.parse(p.time);
        // What the point may hold: the last write done before it, or one in flight at its time
        // (crash-consistent: a write not yet acknowledged may or may not be in it).
        const candidates = [
          log.filter((w) => w.done < at).pop()!.value,
          ...log.filter((w) => w.started <= at && at <= w.done).map((w) => w.value),
        ];
        // Restore a little after the point's time: the newest point at or before it is this one.
        const name = `logged-at-${i}`;
        await ok("volume", "restore", `local/logged@${new Date(at + 1).toISOString()}`, name);
        const back = (await ok("volume", "export", `local/${name}`)).trim();
        const matches = candidates.filter((v) => {
          let read: string;
          try {
            read = qemuIo(back, `read -P ${v} 0 64k`, true);
          } catch (err) {
            read = String(err); // a qemu-io that exits non-zero on a mismatch
          }
          return !/verification failed/i.test(read) && /read 65536\/65536 bytes/.test(read);
        });
        expect(matches.length, `point ${p.snapshotId} holds one of ${candidates.join(", ")}`).toBe(1);
        await ok("volume", "unexport", `local/${name}`);
      }
    },
  );
});
