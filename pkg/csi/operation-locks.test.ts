import { describe, expect, it } from "vitest";
import { OperationLocks, snapshotLock, volumeLock } from "./operation-locks.js";
import { StatusError } from "../errors/index.js";

describe("operation locks (CSI spec, Concurrency: ABORTED for a conflicting call)", () => {
  it("lets shared claims overlap and refuses an exclusive one meanwhile", () => {
    const locks = new OperationLocks();
    const a = locks.acquire([volumeLock("v", "shared")], "CreateSnapshot");
    const b = locks.acquire([volumeLock("v", "shared")], "CreateSnapshot");
    expect(() => locks.acquire([volumeLock("v", "exclusive")], "DeleteVolume")).toThrow(StatusError);
    a();
    expect(() => locks.acquire([volumeLock("v", "exclusive")], "DeleteVolume")).toThrow(/CreateSnapshot/);
    b();
    const c = locks.acquire([volumeLock("v", "exclusive")], "DeleteVolume");
    expect(() => locks.acquire([volumeLock("v", "shared")], "CreateSnapshot")).toThrow(/DeleteVolume/);
    c();
    expect(locks.size).toBe(0);
  });

  it("takes all claims or none", () => {
    const locks = new OperationLocks();
    const held = locks.acquire([snapshotLock("s", "exclusive")], "DeleteSnapshot");
    expect(() =>
      locks.acquire([volumeLock("v", "exclusive"), snapshotLock("s", "shared")], "CreateVolume"),
    ).toThrow();
    // The volume claim of the failed call was not kept.
    locks.acquire([volumeLock("v", "exclusive")], "DeleteVolume")();
    held();
    expect(locks.size).toBe(0);
  });

  it("releases after the operation, even when it fails", async () => {
    const locks = new OperationLocks();
    await expect(
      locks.with([volumeLock("v", "exclusive")], "X", () => Promise.reject(new Error("boom"))),
    ).rejects.toThrow("boom");
    expect(locks.size).toBe(0);
  });
});
