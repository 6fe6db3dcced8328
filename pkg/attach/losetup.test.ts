import { describe, expect, it } from "vitest";
import { loopAttachArgs, parseLosetupJson } from "./losetup.js";

describe("parseLosetupJson", () => {
  it("reads util-linux 2.38 output", () => {
    const text = `{
   "loopdevices": [
      {"name": "/dev/loop0", "sizelimit": 0, "offset": 0, "autoclear": false, "ro": false,
       "back-file": "/var/lib/snapblock/attach/vol 1.fuse/disk", "dio": true, "log-sec": 512},
      {"name": "/dev/loop1", "sizelimit": 4096, "offset": 512, "autoclear": true, "ro": true,
       "back-file": "/tmp/x.img (deleted)", "dio": false, "log-sec": 4096}
   ]
}`;
    expect(parseLosetupJson(text)).toEqual([
      {
        name: "/dev/loop0",
        backFile: "/var/lib/snapblock/attach/vol 1.fuse/disk",
        backFileDeleted: false,
        readOnly: false,
        directIo: true,
        autoclear: false,
        offset: 0,
        sizeLimit: 0,
      },
      {
        name: "/dev/loop1",
        backFile: "/tmp/x.img",
        backFileDeleted: true,
        readOnly: true,
        directIo: false,
        autoclear: true,
        offset: 512,
        sizeLimit: 4096,
      },
    ]);
  });

  it("reads older string booleans and empty output", () => {
    expect(
      parseLosetupJson(
        '{"loopdevices":[{"name":"/dev/loop2","back-file":"/f","ro":"1","dio":"0","autoclear":"0"}]}',
      )[0],
    ).toMatchObject({ readOnly: true, directIo: false });
    expect(parseLosetupJson("")).toEqual([]);
    expect(parseLosetupJson('{"loopdevices": [\n]}')).toEqual([]);
  });

  it("rejects output it does not understand", () => {
    expect(() => parseLosetupJson("loop0: []")).toThrow(/not JSON/);
    expect(() => parseLosetupJson("{}")).toThrow(/loopdevices/);
  });
});

describe("loopAttachArgs", () => {
  it("asks for a free device, direct I/O and read-only as requested, and ends options before the file", () => {
    expect(loopAttachArgs({ file: "/s/k.fuse/disk", readOnly: true, directIo: true })).toEqual([
      "--find",
      "--show",
      "--direct-io=on",
      "--read-only",
      "--",
      "/s/k.fuse/disk",
    ]);
    expect(loopAttachArgs({ file: "/f", readOnly: false, directIo: false })).toEqual([
      "--find",
      "--show",
      "--",
      "/f",
    ]);
  });
});
