import { describe, expect, it } from "vitest";
import { mountOptionsFor } from "./mount-filesystem.js";
import { validateMountFlags } from "./mount-flags.js";

describe("validateMountFlags", () => {
  it("passes ordinary filesystem tuning and removes duplicates", () => {
    expect(
      validateMountFlags([
        "noatime",
        "discard",
        "data=ordered",
        "commit=30",
        "errors=remount-ro",
        "logbsize=256k",
        "noatime",
      ]),
    ).toEqual(["noatime", "discard", "data=ordered", "commit=30", "errors=remount-ro", "logbsize=256k"]);
  });

  it("rejects comma injection", () => {
    expect(() => validateMountFlags(["noatime,bind"])).toThrow(/comma/);
    expect(() => validateMountFlags(["data=ordered,remount"])).toThrow(/comma/);
  });

  it("rejects paths, spaces, quotes and control characters", () => {
    for (const flag of [
      "loop=/dev/loop0",
      "journal_path=/dev/sda",
      "a b",
      'x="y"',
      "a\nb",
      "a\u0000",
      "",
      "-o",
    ]) {
      expect(() => validateMountFlags([flag]), flag).toThrow(/mount flag/);
    }
  });

  it("rejects options that change what mount(8) does", () => {
    for (const flag of [
      "bind",
      "rbind",
      "move",
      "remount",
      "rshared",
      "loop",
      "offset=0",
      "user",
      "owner",
      "X-mount.mkdir",
      "x-systemd.automount",
      "logdev=sda2",
      "journal_dev=0x0801",
      "context=system_u",
      "helper=udisks2",
    ]) {
      expect(() => validateMountFlags([flag]), flag).toThrow(/not allowed/);
    }
    expect(() => validateMountFlags(["BIND"])).toThrow(/not allowed/);
  });

  it("keeps read-only mounts read-only and journal replay on writable ones", () => {
    expect(() => validateMountFlags(["rw"], { readOnly: true })).toThrow(/read-only/);
    expect(() => validateMountFlags(["ro", "rw"])).toThrow(/contradict/);
    expect(() => validateMountFlags(["noload"])).toThrow(/journal replay/);
    expect(validateMountFlags(["norecovery"], { readOnly: true })).toEqual(["norecovery"]);
  });

  it("limits the total length to what the kernel takes", () => {
    const many = Array.from({ length: 200 }, (_, i) => `opt${i}=${"v".repeat(20)}`);
    expect(() => validateMountFlags(many)).toThrow(/in total/);
  });
});

describe("mountOptionsFor", () => {
  it("adds nouuid for xfs and ro for read-only mounts", () => {
    expect(mountOptionsFor({ fsType: "xfs", readOnly: true, flags: ["noatime"] })).toEqual([
      "noatime",
      "nouuid",
      "ro",
    ]);
    expect(mountOptionsFor({ fsType: "ext4", readOnly: false })).toEqual([]);
  });
});
