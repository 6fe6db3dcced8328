import { promises as fs } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { removeAtomicWriteLeftovers, writeFileAtomically } from "./atomic-file.js";
import { prepareSocketPath, removeOwnSocket, restrictSocket } from "./unix-socket.js";

let dir: string;
beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "snapblock-files-"));
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

describe("writeFileAtomically", () => {
  it("replaces the file whole, 0600, and leaves no temporary file", async () => {
    const file = path.join(dir, "state.json");
    await writeFileAtomically(file, "one", { what: "test state" });
    await writeFileAtomically(file, "two", { what: "test state" });
    expect(await fs.readFile(file, "utf8")).toBe("two");
    expect((await fs.stat(file)).mode & 0o777).toBe(0o600);
    expect(await fs.readdir(dir)).toEqual(["state.json"]);
  });

  it("keeps the old content when the write fails, and names the file in the error", async () => {
    const file = path.join(dir, "state.json");
    await writeFileAtomically(file, "old", { what: "test state" });
    await fs.mkdir(path.join(dir, "blocker"));
    // Renaming a file over a directory fails: the target must stay as it was.
    await expect(
      writeFileAtomically(path.join(dir, "blocker"), "new", { what: "test state" }),
    ).rejects.toThrow(/writing test state .*blocker/);
    expect(await fs.readFile(file, "utf8")).toBe("old");
    expect((await fs.readdir(dir)).sort()).toEqual(["blocker", "state.json"]);
  });

  it("removes leftovers of interrupted writes of that file only", async () => {
    const file = path.join(dir, "state.json");
    await fs.writeFile(`${file}.tmp-123-0a1b2c3d`, "x");
    await fs.writeFile(path.join(dir, "other.json.tmp-123-0a1b2c3d"), "x");
    await fs.writeFile(`${file}.tmp-notours`, "x");
    await removeAtomicWriteLeftovers(file);
    expect((await fs.readdir(dir)).sort()).toEqual(["other.json.tmp-123-0a1b2c3d", "state.json.tmp-notours"]);
  });
});

describe("unix sockets", () => {
  const listen = (socketPath: string): Promise<net.Server> =>
    new Promise((resolve, reject) => {
      const server = net.createServer();
      server.once("error", reject);
      server.listen(socketPath, () => resolve(server));
    });

  it("refuses a directory other users can write to (a racer could swap the socket for a link)", async () => {
    const open = path.join(dir, "open");
    await fs.mkdir(open);
    await fs.chmod(open, 0o777);
    await expect(prepareSocketPath(path.join(open, "csi.sock"), "CSI")).rejects.toThrow(
      /can be written by other users \(mode 777/,
    );
    await fs.chmod(open, 0o1777); // sticky does not make it private either
    await expect(prepareSocketPath(path.join(open, "csi.sock"), "CSI")).rejects.toThrow(/other users/);
  });

  it("creates a missing directory owner-only, replaces a stale socket, refuses a live one or a file", async () => {
    const socketPath = path.join(dir, "sub", "x.sock");
    await prepareSocketPath(socketPath, "NBD");
    expect((await fs.stat(path.dirname(socketPath))).mode & 0o777).toBe(0o700);

    const live = await listen(socketPath);
    await expect(prepareSocketPath(socketPath, "NBD")).rejects.toThrow(/another process serves/);
    // A socket file whose server is gone (closed without unlink, as after a crash) is stale.
    live.close();
    await new Promise((resolve) => live.once("close", resolve));
    await fs.writeFile(path.join(dir, "plain"), "data");
    await expect(prepareSocketPath(path.join(dir, "plain"), "NBD")).rejects.toThrow(/not a socket/);
    expect(await fs.readFile(path.join(dir, "plain"), "utf8")).toBe("data");
  });

  it("restricts the bound socket and removes it only while it is still ours", async () => {
    const socketPath = path.join(dir, "y.sock");
    await prepareSocketPath(socketPath, "NBD");
    const server = await listen(socketPath);
    try {
      const inode = await restrictSocket(socketPath, 0o600);
      expect((await fs.stat(socketPath)).mode & 0o777).toBe(0o600);
      expect(await removeOwnSocket(socketPath, inode + 1)).toBe(false);
      expect(await removeOwnSocket(socketPath, inode)).toBe(true);
      await expect(fs.lstat(socketPath)).rejects.toThrow(/ENOENT/);
    } finally {
      server.close();
    }
  });

  it("refuses to chmod through a link that replaced the socket", async () => {
    const victim = path.join(dir, "victim");
    await fs.writeFile(victim, "secret", { mode: 0o600 });
    const socketPath = path.join(dir, "z.sock");
    await fs.symlink(victim, socketPath);
    await expect(restrictSocket(socketPath, 0o666)).rejects.toThrow(/no longer the socket/);
    expect((await fs.stat(victim)).mode & 0o777).toBe(0o600);
  });
});
