import { describe, expect, it } from "vitest";
import { SnapblockError } from "../errors/index.js";
import {
  containingMount,
  matchDeviceMounts,
  parseMountInfo,
  splitDeviceNumber,
  unescapeMountField,
} from "./mountinfo.js";

const SAMPLE = [
  "22 27 0:21 / /proc rw,relatime - proc proc rw",
  "24 27 0:6 / /dev rw,relatime shared:2 - devtmpfs devtmpfs rw,size=12334460k,mode=755",
  "27 1 254:0 / / rw,relatime shared:1 master:7 - ext4 /dev/vda rw,discard",
  // A staged ext4 volume whose path has a space and a tab in it.
  "44 27 7:3 / /var/lib/kubelet/staging/my\\040vol\\011x rw,noatime - ext4 /dev/loop3 rw",
  // Its read-only bind into a pod.
  "45 27 7:3 / /var/lib/kubelet/pods/p1/volumes/v ro,noatime - ext4 /dev/loop3 rw",
  // A raw block volume: the device node bind-mounted onto a file.
  "46 27 0:6 /loop3 /var/lib/kubelet/pods/p2/volumeDevices/dev1 rw,relatime - devtmpfs devtmpfs rw,mode=755",
  // nbdfuse's FUSE mount (no optional fields, source with a backslash).
  "47 27 0:41 / /var/lib/snapblock/attach/vol-1.fuse rw,nosuid,nodev,relatime - fuse /dev/fuse rw,user_id=0,group_id=0",
  "48 27 0:42 / /tmp/a\\134b rw - tmpfs weird\\040source rw",
  "",
].join("\n");

describe("parseMountInfo", () => {
  const entries = parseMountInfo(SAMPLE);

  it("reads every field, with variable optional fields", () => {
    expect(entries).toHaveLength(8);
    const root = entries[2]!;
    expect(root).toEqual({
      mountId: 27,
      parentId: 1,
      major: 254,
      minor: 0,
      root: "/",
      mountPoint: "/",
      mountOptions: ["rw", "relatime"],
      optionalFields: ["shared:1", "master:7"],
      fsType: "ext4",
      source: "/dev/vda",
      superOptions: ["rw", "discard"],
    });
    expect(entries[6]!.optionalFields).toEqual([]);
  });

  it("unescapes octal escapes in paths and sources", () => {
    expect(entries[3]!.mountPoint).toBe("/var/lib/kubelet/staging/my vol\tx");
    expect(entries[7]!.mountPoint).toBe("/tmp/a\\b");
    expect(entries[7]!.source).toBe("weird source");
    expect(unescapeMountField("a\\012b")).toBe("a\nb");
  });

  it("keeps the root of bind mounts", () => {
    expect(entries[5]!.root).toBe("/loop3");
  });

  it("rejects lines it does not understand instead of guessing", () => {
    expect(() => parseMountInfo("1 2 3")).toThrow(SnapblockError);
    expect(() => parseMountInfo("1 2 x:y / /a rw - ext4 /dev/a rw")).toThrow(/device number/);
  });
});

describe("matchDeviceMounts", () => {
  const entries = parseMountInfo(SAMPLE);

  it("finds filesystem mounts by device number and node bind mounts by root", () => {
    const found = matchDeviceMounts(
      entries,
      { major: 7, minor: 3 },
      { containingFs: { major: 0, minor: 6 }, path: "/dev/loop3" },
    );
    expect(found.filesystemMounts.map((e) => e.mountId)).toEqual([44, 45]);
    expect(found.nodeBindMounts.map((e) => e.mountId)).toEqual([46]);
  });

  it("finds nothing for a device nobody mounted", () => {
    const found = matchDeviceMounts(
      entries,
      { major: 7, minor: 4 },
      { containingFs: { major: 0, minor: 6 }, path: "/dev/loop4" },
    );
    expect(found).toEqual({ filesystemMounts: [], nodeBindMounts: [] });
  });

  it("picks the longest mount point prefix as the containing mount", () => {
    expect(containingMount(entries, "/dev/loop3")?.mountId).toBe(24);
    expect(containingMount(entries, "/devices")?.mountId).toBe(27);
  });
});

describe("splitDeviceNumber", () => {
  it("decodes the kernel's dev_t layout, including large minors", () => {
    expect(splitDeviceNumber((7n << 8n) | 3n)).toEqual({ major: 7, minor: 3 });
    // major 259 (blkext), minor 300: minor's high bits live above bit 20.
    const dev = (259n << 8n) | (300n & 0xffn) | ((300n & ~0xffn) << 12n);
    expect(splitDeviceNumber(dev)).toEqual({ major: 259, minor: 300 });
  });
});
