import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AttachmentStateStore, type AttachmentRecord } from "./state-store.js";

let dir: string;
beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "snapblock-state-"));
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

function record(key: string): AttachmentRecord {
  return {
    version: 1,
    key,
    kind: "nbdfuse-loop",
    socketPath: "/run/snapblock/vol.sock",
    exportName: "vol",
    readOnly: false,
    expectedSizeBytes: 1 << 20,
    phase: "attached",
    devicePath: "/dev/loop3",
    createdAt: "2025-01-01T00:00:00.000Z",
    nbdfuse: { mountDir: `/s/${key}.fuse`, file: `/s/${key}.fuse/disk`, logPath: `/s/${key}.log`, pid: 42 },
  };
}

describe("AttachmentStateStore", () => {
  it("writes, reads, lists and removes records, creating the directory owner-only", async () => {
    const store = new AttachmentStateStore(path.join(dir, "state"));
    await store.write(record("b"));
    await store.write(record("a"));
    expect(await store.read("a")).toEqual(record("a"));
    expect((await store.list()).map((r) => r.key)).toEqual(["a", "b"]);
    expect((await fs.stat(path.join(dir, "state"))).mode & 0o777).toBe(0o700);
    await store.remove("a");
    await store.remove("a");
    expect(await store.read("a")).toBeUndefined();
    expect(await fs.readdir(path.join(dir, "state"))).toEqual(["b.json"]);
  });

  it("ignores temporary files of interrupted writes and reads nothing from a missing directory", async () => {
    const store = new AttachmentStateStore(path.join(dir, "state"));
    expect(await store.list()).toEqual([]);
    await store.write(record("a"));
    await fs.writeFile(path.join(dir, "state", "a.json.tmp-1-abcd"), "{");
    expect((await store.list()).map((r) => r.key)).toEqual(["a"]);
  });

  it("refuses records it cannot trust", async () => {
    const store = new AttachmentStateStore(dir);
    await fs.writeFile(path.join(dir, "x.json"), "{not json");
    await expect(store.read("x")).rejects.toMatchObject({ code: "CORRUPT" });
    await fs.writeFile(path.join(dir, "y.json"), JSON.stringify(record("other")));
    await expect(store.read("y")).rejects.toThrow(/does not match/);
    const noPid = { ...record("z"), nbdfuse: { mountDir: "/m", file: "/m/disk", logPath: "/l", pid: "1" } };
    await fs.writeFile(path.join(dir, "z.json"), JSON.stringify(noPid));
    await expect(store.read("z")).rejects.toThrow(/nbdfuse.pid/);
    const nbd = (extra: Record<string, unknown>) => ({
      ...record("n"),
      kind: "nbd-client",
      nbdfuse: undefined,
      nbd: { index: 2, ...extra },
    });
    await fs.writeFile(path.join(dir, "n.json"), JSON.stringify(nbd({ via: "ioctl" })));
    await expect(store.read("n")).rejects.toThrow(/bad nbd.via/);
    await fs.writeFile(path.join(dir, "n.json"), JSON.stringify(nbd({ via: "netlink", connections: -1 })));
    await expect(store.read("n")).rejects.toThrow(/bad nbd.connections/);
    await fs.writeFile(
      path.join(dir, "n.json"),
      JSON.stringify(nbd({ via: "netlink", deadConnTimeoutSeconds: 120 })),
    );
    expect((await store.read("n"))?.nbd).toEqual({ index: 2, via: "netlink", deadConnTimeoutSeconds: 120 });
  });

  it("rejects keys that could name other files", () => {
    const store = new AttachmentStateStore(dir);
    for (const key of ["../x", "a/b", "", ".hidden", "a".repeat(129)]) {
      expect(() => store.recordPath(key), key).toThrow(/attachment key/);
    }
  });
});
