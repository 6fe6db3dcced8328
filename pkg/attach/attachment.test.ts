import { describe, expect, it } from "vitest";
import { isValidAttachmentKey, validateAttachOptions } from "./attachment.js";
import { KeyedMutex } from "./keyed-mutex.js";
import { nbdfuseArgs } from "./nbdfuse-process.js";

describe("attach options", () => {
  it("accepts volume-id-like keys only", () => {
    expect(isValidAttachmentKey("pvc-0b5c.vol_1")).toBe(true);
    expect(isValidAttachmentKey("-x")).toBe(false);
    expect(isValidAttachmentKey("a b")).toBe(false);
  });

  it("checks socket path, export name and size", () => {
    const ok = { key: "v", socketPath: "/run/s.sock", exportName: "v", readOnly: false, sizeBytes: 0 };
    expect(() => validateAttachOptions(ok)).not.toThrow();
    expect(() => validateAttachOptions({ ...ok, socketPath: "run/s.sock" })).toThrow(/absolute/);
    expect(() => validateAttachOptions({ ...ok, exportName: "x".repeat(4097) })).toThrow(/4096/);
    expect(() => validateAttachOptions({ ...ok, sizeBytes: -1 })).toThrow(/non-negative/);
  });
});

describe("nbdfuse command line", () => {
  it("uses an NBD URI so that the export name reaches the server", () => {
    expect(
      nbdfuseArgs({
        file: "/s/k.fuse/disk",
        uri: "nbd+unix:///v?socket=/s.sock",
        readOnly: true,
        pidFile: "/s/k.pid",
      }),
    ).toEqual(["-P", "/s/k.pid", "-r", "/s/k.fuse/disk", "nbd+unix:///v?socket=/s.sock"]);
  });
});

describe("KeyedMutex", () => {
  it("serializes one key and lets other keys run", async () => {
    const mutex = new KeyedMutex();
    const order: string[] = [];
    let releaseFirst!: () => void;
    const first = mutex.run("a", async () => {
      order.push("a1 start");
      await new Promise<void>((resolve) => (releaseFirst = resolve));
      order.push("a1 end");
    });
    const second = mutex.run("a", () => {
      order.push("a2");
      return Promise.resolve();
    });
    const other = mutex.run("b", () => {
      order.push("b");
      return Promise.resolve();
    });
    await other;
    expect(order).toEqual(["a1 start", "b"]);
    releaseFirst();
    await Promise.all([first, second]);
    expect(order).toEqual(["a1 start", "b", "a1 end", "a2"]);
  });

  it("releases the key when the operation fails", async () => {
    const mutex = new KeyedMutex();
    await expect(mutex.run("a", () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    await expect(mutex.run("a", () => Promise.resolve(7))).resolves.toBe(7);
  });
});
