import { describe, expect, it } from "vitest";
import { classifyBlkid, parseBlkidExport, probeFilesystem } from "./filesystem-probe.js";
import type { CommandRunner } from "./run-command.js";

describe("parseBlkidExport", () => {
  it("reads KEY=value lines of the first device only", () => {
    const text =
      "DEVNAME=/dev/loop0\nUUID=abc\nLABEL=my\\ label\nTYPE=ext4\nUSAGE=filesystem\n\nDEVNAME=/dev/loop1\nTYPE=xfs\n";
    expect(parseBlkidExport(text)).toEqual({
      DEVNAME: "/dev/loop0",
      UUID: "abc",
      LABEL: "my label",
      TYPE: "ext4",
      USAGE: "filesystem",
    });
  });
});

describe("classifyBlkid", () => {
  it("treats exit code 2 (nothing found) as blank", () => {
    expect(classifyBlkid(2, "")).toEqual({ kind: "blank" });
  });

  it("recognises filesystems", () => {
    expect(classifyBlkid(0, "TYPE=xfs\nUSAGE=filesystem\nUUID=u1\n")).toEqual({
      kind: "filesystem",
      fsType: "xfs",
      uuid: "u1",
    });
  });

  it("refuses partition tables, RAID/LUKS/LVM members, swap and ambivalent results", () => {
    expect(classifyBlkid(0, "PTUUID=1\nPTTYPE=gpt\n")).toMatchObject({
      kind: "other",
      description: "a gpt partition table",
    });
    expect(classifyBlkid(0, "TYPE=crypto_LUKS\nUSAGE=crypto\n")).toMatchObject({
      kind: "other",
      description: "crypto_LUKS (crypto)",
    });
    expect(classifyBlkid(0, "TYPE=LVM2_member\nUSAGE=raid\n")).toMatchObject({ kind: "other" });
    expect(classifyBlkid(0, "TYPE=swap\nUSAGE=other\n")).toMatchObject({ kind: "other" });
    expect(classifyBlkid(8, "")).toMatchObject({
      kind: "other",
      description: expect.stringMatching(/ambivalent/) as string,
    });
    expect(classifyBlkid(0, "")).toMatchObject({ kind: "other" });
  });
});

describe("probeFilesystem", () => {
  it("runs blkid in low-level probe mode and accepts its 'nothing found' exit", async () => {
    const calls: string[][] = [];
    const runner: CommandRunner = (o) => {
      calls.push([o.command, ...o.args]);
      expect(o.acceptExitCodes).toContain(2);
      return Promise.resolve({ command: o.command, args: o.args, exitCode: 2, stdout: "", stderr: "" });
    };
    await expect(probeFilesystem("/dev/loop9", { runner })).resolves.toEqual({ kind: "blank" });
    expect(calls).toEqual([["blkid", "-p", "-o", "export", "--", "/dev/loop9"]]);
  });
});
