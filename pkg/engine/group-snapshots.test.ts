import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isSnapblockError } from "../errors/index.js";
import { FaultStorage, Pool } from "./index.js";

const CS = 65536;
let dir: string;
let pool: Pool;
let commits: number[];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "snapblock-group-"));
  commits = [];
  pool = await Pool.create({
    dir: join(dir, "pool"),
    sizeBytes: 512 * CS,
    autoCommitMs: 0,
    observer: { committed: (e) => commits.push(e.records) },
  });
  for (const v of ["a", "b", "c"]) await pool.createVolume(v, 4 * CS);
});

afterEach(async () => {
  await pool.close().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

const members = (tag: string) => ["a", "b", "c"].map((v) => ({ volume: v, snapshot: `${tag}-${v}` }));

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (isSnapblockError(err)) return err.code;
    throw err;
  }
  return "OK";
}

describe("group snapshots in one pool", () => {
  it("records every member in one commit, at one instant, and is idempotent by name", async () => {
    commits = [];
    const made = await pool.createSnapshots(members("g1"));
    expect(made.map((s) => s.sourceVolume)).toEqual(["a", "b", "c"]);
    expect(new Set(made.map((s) => s.createdAt.getTime())).size).toBe(1);
    expect(commits).toEqual([3]); // one journal batch holding the three records
    const again = await pool.createSnapshots(members("g1"));
    expect(again.map((s) => s.id)).toEqual(made.map((s) => s.id));
    // The same names for other volumes, or only some of them existing: refused, nothing made.
    const swapped = [
      { volume: "b", snapshot: "g1-a" },
      { volume: "a", snapshot: "g1-b" },
    ];
    expect(await code(pool.createSnapshots(swapped))).toBe("ALREADY_EXISTS");
    expect(await code(pool.createSnapshots([...members("g1"), { volume: "a", snapshot: "x" }]))).toBe(
      "INVALID_ARGUMENT",
    );
    expect(
      await code(
        pool.createSnapshots([
          { volume: "a", snapshot: "g1-a" },
          { volume: "b", snapshot: "new" },
        ]),
      ),
    ).toBe("ALREADY_EXISTS");
    expect(pool.listSnapshots().map((s) => s.name)).toEqual(["g1-a", "g1-b", "g1-c"]);
    expect(await code(pool.createSnapshots([]))).toBe("INVALID_ARGUMENT");
    expect(await code(pool.createSnapshots([{ volume: "nope", snapshot: "n" }]))).toBe("NOT_FOUND");
  });

  it("is one consistent cut while writers alternate between the volumes", async () => {
    const handles = ["a", "b", "c"].map((v) => pool.openVolume(v));
    let seq = 0;
    let stop = false;
    const writer = (async () => {
      while (!stop) {
        seq++;
        const buf = Buffer.alloc(4096);
        buf.writeUInt32LE(seq, 0);
        await handles[seq % 3]!.write(0, buf);
        // In-process writes can complete without I/O callbacks: let the snapshots' commits run.
        await new Promise((r) => setImmediate(r));
      }
    })();
    for (let i = 0; i < 30; i++) {
      await pool.createSnapshots(members(`cut${i}`));
      await new Promise((r) => setImmediate(r));
    }
    stop = true;
    await writer;
    for (const h of handles) h.close();
    for (let i = 0; i < 30; i++) {
      const seen: number[] = [];
      for (const v of ["a", "b", "c"]) {
        const snap = pool.openSnapshot(`cut${i}-${v}`);
        seen.push((await snap.read(0, 4)).readUInt32LE(0));
        snap.close();
      }
      // The writes are serial: the last write in each volume's snapshot are consecutive numbers.
      const sorted = [...seen].filter((n) => n > 0).sort((x, y) => x - y);
      for (let k = 1; k < sorted.length; k++) expect(sorted[k]! - sorted[k - 1]!).toBe(1);
    }
    expect(seq).toBeGreaterThan(30);
  });

  it("holds back even a write into a chunk the volume owns (the synchronous in-place path)", async () => {
    const h = pool.openVolume("b");
    // A whole chunk written: a complete chunk of its own, so the next write goes in place.
    await h.write(CS, Buffer.alloc(CS, 1));
    await h.write(CS + 8192, Buffer.alloc(4096, 2));
    const hold = await pool.holdWrites(["b"], { timeoutMs: 5000 });
    let written = false;
    const write = h.write(CS + 8192, Buffer.alloc(4096, 3)).then(() => (written = true));
    await new Promise((r) => setTimeout(r, 50));
    expect(written).toBe(false);
    await pool.createSnapshots([{ volume: "b", snapshot: "owned-held" }], { hold });
    hold.release();
    await write;
    const snap = pool.openSnapshot("owned-held");
    expect((await snap.read(CS + 8192, 1))[0]).toBe(2);
    snap.close();
    expect((await h.read(CS + 8192, 1))[0]).toBe(3);
    h.close();
  });

  it("holds new writes until released; an expired hold takes no snapshot", async () => {
    const h = pool.openVolume("a");
    const hold = await pool.holdWrites(["a", "b"], { timeoutMs: 5000 });
    expect(hold.active).toBe(true);
    let written = false;
    const write = h.write(0, Buffer.alloc(4096, 7)).then(() => (written = true));
    await new Promise((r) => setTimeout(r, 50));
    expect(written).toBe(false);
    await pool.createSnapshots(
      [
        { volume: "a", snapshot: "held-a" },
        { volume: "b", snapshot: "held-b" },
      ],
      { hold },
    );
    expect(hold.release()).toEqual({ heldThroughout: true });
    await write;
    const snap = pool.openSnapshot("held-a");
    expect((await snap.read(0, 1))[0]).toBe(0); // the held write is not in the snapshot
    snap.close();

    const short = await pool.holdWrites(["a", "b"], { timeoutMs: 30 });
    await new Promise((r) => setTimeout(r, 80));
    expect(short.active).toBe(false);
    await h.write(0, Buffer.alloc(4096, 9)); // the expired hold let writes go on
    expect(await code(pool.createSnapshots([{ volume: "a", snapshot: "late" }], { hold: short }))).toBe(
      "CANCELLED",
    );
    expect(short.release()).toEqual({ heldThroughout: false });
    expect(pool.listSnapshots().map((s) => s.name)).not.toContain("late");
    // A hold that does not cover a member is refused.
    const partial = await pool.holdWrites(["a"], { timeoutMs: 5000 });
    expect(await code(pool.createSnapshots([{ volume: "b", snapshot: "nb" }], { hold: partial }))).toBe(
      "INVALID_ARGUMENT",
    );
    partial.release();
    h.close();
  });
});

describe("group snapshots after a power loss", () => {
  it("leaves every member or none, at every crash point", async () => {
    const outcomes = { all: 0, none: 0 };
    for (let crashAt = 0; crashAt < 12; crashAt++) {
      let storage = new FaultStorage({ seed: 40 + crashAt, survival: 0.5 });
      let p = await Pool.create({ storage, sizeBytes: 64 * 8192, chunkSize: 8192, autoCommitMs: 0 });
      for (const v of ["a", "b", "c"]) {
        await p.createVolume(v, 4 * 8192);
        const h = p.openVolume(v);
        await h.write(0, Buffer.alloc(8192, v.charCodeAt(0)));
        h.close();
      }
      await p.commit();
      storage.crashAfter(crashAt);
      let acknowledged = false;
      try {
        await p.createSnapshots(members("crash"));
        acknowledged = !storage.crashed;
      } catch (err) {
        if (!storage.crashed) throw err;
      }
      if (!storage.crashed) storage.crashNow();
      storage = new FaultStorage({ seed: 90 + crashAt, image: storage.image(), survival: 0.5 });
      p = await Pool.open({ storage, autoCommitMs: 0 });
      const names = p.listSnapshots().map((s) => s.name);
      if (acknowledged) expect(names).toEqual(["crash-a", "crash-b", "crash-c"]);
      else expect([0, 3]).toContain(names.length);
      if (names.length === 3) {
        outcomes.all++;
        for (const v of ["a", "b", "c"]) {
          const s = p.openSnapshot(`crash-${v}`);
          expect((await s.read(0, 8192)).equals(Buffer.alloc(8192, v.charCodeAt(0)))).toBe(true);
          s.close();
        }
      } else outcomes.none++;
      expect((await p.check()).problems).toEqual([]);
      await p.close();
    }
    // Both outcomes happen over these crash points, so the test sees a crash mid-commit.
    expect(outcomes.all).toBeGreaterThan(0);
    expect(outcomes.none).toBeGreaterThan(0);
  });
});
