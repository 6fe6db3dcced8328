import { status } from "@grpc/grpc-js";
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callCsi } from "../../pkg/csi/index.js";
import { BLOCK, MOUNT_EXT4, MiB, createSnapshot, createVolume } from "./csi-fixtures.js";
import { failureCode, removeDataDir, startLocal, type LocalProcess } from "./local-process.js";

// Bad requests across the RPCs, each with the code the CSI spec gives it ("Error Scheme" and the
// per-RPC error tables), against the real binary.
let local: LocalProcess;
let root: string;
let volumeId: string;
let snapshotId: string;
let otherVolumeId: string;

beforeAll(async () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), "snapblock-csi-bad-"));
  root = path.join(dataDir, "kubelet");
  local = await startLocal({ dataDir, args: ["--path-root", root] });
  mkdirSync(path.join(root, "pods", "empty-dir"), { recursive: true });
  volumeId = (
    await createVolume(local.clients.controller, {
      name: "pvc-base",
      volumeCapabilities: [MOUNT_EXT4],
      capacityRange: { requiredBytes: 64 * MiB },
    })
  ).volume.volumeId;
  otherVolumeId = (
    await createVolume(local.clients.controller, {
      name: "pvc-other",
      volumeCapabilities: [BLOCK],
      capacityRange: { requiredBytes: MiB },
    })
  ).volume.volumeId;
  snapshotId = (await createSnapshot(local.clients.controller, "snap-base", volumeId)).snapshot.snapshotId;
});
afterAll(async () => {
  await local.stop();
  removeDataDir(local.dataDir);
});

type Service = "controller" | "node" | "identity";
interface Case {
  what: string;
  service: Service;
  method: string;
  request: () => object;
  code: status;
  /** A fragment the message must contain, so a person can act on it. */
  says?: string;
}

/** Volume ids that name nothing: one of this node, one that cannot be ours (as csi-sanity makes them). */
const unknownIds = ["local/ghost", "sanity-unknown-volume-id"];
const cap = (mode: string, fsType = "ext4") => ({ mount: { fsType }, accessMode: { mode } });
const create = (extra: object) => ({ name: "pvc-bad", volumeCapabilities: [MOUNT_EXT4], ...extra });
const stage = (extra: object) => ({
  volumeId,
  stagingTargetPath: `${root}/staging/pvc-base`,
  volumeCapability: MOUNT_EXT4,
  ...extra,
});
const publish = (extra: object) => ({
  volumeId,
  stagingTargetPath: `${root}/staging/pvc-base`,
  targetPath: `${root}/pods/p1/vol`,
  volumeCapability: MOUNT_EXT4,
  ...extra,
});

const cases: Case[] = [
  // CreateVolume
  {
    what: "CreateVolume without name",
    service: "controller",
    method: "CreateVolume",
    request: () => ({ volumeCapabilities: [MOUNT_EXT4] }),
    code: status.INVALID_ARGUMENT,
    says: "name is required",
  },
  {
    what: "CreateVolume without capabilities",
    service: "controller",
    method: "CreateVolume",
    request: () => ({ name: "pvc-bad" }),
    code: status.INVALID_ARGUMENT,
    says: "volume_capabilities",
  },
  {
    what: "CreateVolume capability without access mode",
    service: "controller",
    method: "CreateVolume",
    request: () => create({ volumeCapabilities: [{ mount: {} }] }),
    code: status.INVALID_ARGUMENT,
    says: "access_mode",
  },
  {
    what: "CreateVolume capability without access type",
    service: "controller",
    method: "CreateVolume",
    request: () => create({ volumeCapabilities: [{ accessMode: { mode: "SINGLE_NODE_WRITER" } }] }),
    code: status.INVALID_ARGUMENT,
    says: "block or mount",
  },
  {
    what: "CreateVolume MULTI_NODE_MULTI_WRITER",
    service: "controller",
    method: "CreateVolume",
    request: () => create({ volumeCapabilities: [cap("MULTI_NODE_MULTI_WRITER")] }),
    code: status.INVALID_ARGUMENT,
    says: "MULTI_NODE_MULTI_WRITER",
  },
  {
    what: "CreateVolume MULTI_NODE_READER_ONLY",
    service: "controller",
    method: "CreateVolume",
    request: () => create({ volumeCapabilities: [cap("MULTI_NODE_READER_ONLY")] }),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "CreateVolume MULTI_NODE_SINGLE_WRITER",
    service: "controller",
    method: "CreateVolume",
    request: () => create({ volumeCapabilities: [cap("MULTI_NODE_SINGLE_WRITER")] }),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "CreateVolume unsupported filesystem",
    service: "controller",
    method: "CreateVolume",
    request: () => create({ volumeCapabilities: [cap("SINGLE_NODE_WRITER", "btrfs")] }),
    code: status.INVALID_ARGUMENT,
    says: "btrfs",
  },
  {
    what: "CreateVolume unknown parameter",
    service: "controller",
    method: "CreateVolume",
    request: () => create({ parameters: { replicas: "3" } }),
    code: status.INVALID_ARGUMENT,
    says: '"replicas"',
  },
  {
    what: "CreateVolume bad fsType parameter",
    service: "controller",
    method: "CreateVolume",
    request: () => create({ parameters: { fsType: "ntfs" } }),
    code: status.INVALID_ARGUMENT,
    says: "ntfs",
  },
  {
    what: "CreateVolume bad fullCopy parameter",
    service: "controller",
    method: "CreateVolume",
    request: () => create({ parameters: { "snapblock.dev/fullCopy": "yes" } }),
    code: status.INVALID_ARGUMENT,
    says: "fullCopy",
  },
  {
    what: "CreateVolume fsType parameter disagrees with capability",
    service: "controller",
    method: "CreateVolume",
    request: () => create({ parameters: { fsType: "xfs" } }),
    code: status.INVALID_ARGUMENT,
    says: "agree",
  },
  {
    what: "CreateVolume negative required_bytes",
    service: "controller",
    method: "CreateVolume",
    request: () => create({ capacityRange: { requiredBytes: -1 } }),
    code: status.INVALID_ARGUMENT,
    says: "negative",
  },
  {
    what: "CreateVolume limit below required",
    service: "controller",
    method: "CreateVolume",
    request: () => create({ capacityRange: { requiredBytes: 10 * MiB, limitBytes: 5 * MiB } }),
    code: status.OUT_OF_RANGE,
  },
  {
    what: "CreateVolume beyond the largest volume",
    service: "controller",
    method: "CreateVolume",
    request: () => create({ capacityRange: { requiredBytes: 2 ** 51 } }),
    code: status.OUT_OF_RANGE,
  },
  {
    what: "CreateVolume limit smaller than a sector",
    service: "controller",
    method: "CreateVolume",
    request: () => create({ capacityRange: { limitBytes: 100 } }),
    code: status.OUT_OF_RANGE,
  },
  {
    what: "CreateVolume bigger than the pool allows",
    service: "controller",
    method: "CreateVolume",
    request: () => create({ capacityRange: { requiredBytes: 5 * 1024 * MiB } }),
    code: status.RESOURCE_EXHAUSTED,
    says: "can provision",
  },
  {
    what: "CreateVolume from a missing snapshot",
    service: "controller",
    method: "CreateVolume",
    request: () => create({ volumeContentSource: { snapshot: { snapshotId: "local/no-such-snap" } } }),
    code: status.NOT_FOUND,
  },
  {
    what: "CreateVolume from a malformed snapshot id",
    service: "controller",
    method: "CreateVolume",
    request: () => create({ volumeContentSource: { snapshot: { snapshotId: "../../etc/passwd" } } }),
    code: status.NOT_FOUND,
  },
  {
    what: "CreateVolume from a missing volume",
    service: "controller",
    method: "CreateVolume",
    request: () => create({ volumeContentSource: { volume: { volumeId: "local/no-such-volume" } } }),
    code: status.NOT_FOUND,
  },
  {
    what: "CreateVolume smaller than its source snapshot",
    service: "controller",
    method: "CreateVolume",
    request: () =>
      create({ capacityRange: { limitBytes: 8 * MiB }, volumeContentSource: { snapshot: { snapshotId } } }),
    code: status.OUT_OF_RANGE,
    says: "source",
  },
  {
    what: "CreateVolume required_bytes below its source snapshot",
    service: "controller",
    method: "CreateVolume",
    request: () =>
      create({
        capacityRange: { requiredBytes: 8 * MiB },
        volumeContentSource: { snapshot: { snapshotId } },
      }),
    code: status.OUT_OF_RANGE,
    says: "smaller than the source (64 MiB (67108864 bytes))",
  },
  {
    what: "CreateVolume mounted filesystem from a raw block volume",
    service: "controller",
    method: "CreateVolume",
    request: () => create({ volumeContentSource: { volume: { volumeId: otherVolumeId } } }),
    code: status.INVALID_ARGUMENT,
    says: "holds raw block data",
  },
  {
    what: "CreateVolume raw block from a filesystem volume",
    service: "controller",
    method: "CreateVolume",
    request: () => create({ volumeCapabilities: [BLOCK], volumeContentSource: { snapshot: { snapshotId } } }),
    code: status.INVALID_ARGUMENT,
    says: "holds an ext4 filesystem",
  },
  {
    what: "CreateVolume xfs from an ext4 snapshot",
    service: "controller",
    method: "CreateVolume",
    request: () =>
      create({
        volumeCapabilities: [cap("SINGLE_NODE_WRITER", "xfs")],
        volumeContentSource: { snapshot: { snapshotId } },
      }),
    code: status.INVALID_ARGUMENT,
    says: "ask for ext4",
  },
  {
    what: "CreateVolume bad allowModeChange parameter",
    service: "controller",
    method: "CreateVolume",
    request: () => create({ parameters: { "snapblock.dev/allowModeChange": "yes" } }),
    code: status.INVALID_ARGUMENT,
    says: "allowModeChange",
  },
  {
    what: "CreateVolume same name, other size",
    service: "controller",
    method: "CreateVolume",
    request: () => ({
      name: "pvc-base",
      volumeCapabilities: [MOUNT_EXT4],
      capacityRange: { requiredBytes: 128 * MiB },
    }),
    code: status.ALREADY_EXISTS,
  },
  {
    what: "CreateVolume same name, other source",
    service: "controller",
    method: "CreateVolume",
    request: () => ({
      name: "pvc-base",
      volumeCapabilities: [MOUNT_EXT4],
      volumeContentSource: { snapshot: { snapshotId } },
    }),
    code: status.ALREADY_EXISTS,
  },
  {
    what: "CreateVolume name with a banned control character",
    service: "controller",
    method: "CreateVolume",
    request: () => create({ name: "pvc\u0007bell" }),
    code: status.INVALID_ARGUMENT,
    says: "control character",
  },
  {
    what: "CreateVolume for another node's topology",
    service: "controller",
    method: "CreateVolume",
    request: () =>
      create({
        accessibilityRequirements: {
          requisite: [{ segments: { "topology.snapblock.dev/node": "elsewhere" } }],
        },
      }),
    code: status.RESOURCE_EXHAUSTED,
  },
  // DeleteVolume / Validate / Get / Expand
  {
    what: "DeleteVolume without id",
    service: "controller",
    method: "DeleteVolume",
    request: () => ({}),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "ValidateVolumeCapabilities without id",
    service: "controller",
    method: "ValidateVolumeCapabilities",
    request: () => ({ volumeCapabilities: [MOUNT_EXT4] }),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "ValidateVolumeCapabilities without capabilities",
    service: "controller",
    method: "ValidateVolumeCapabilities",
    request: () => ({ volumeId }),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "ValidateVolumeCapabilities unknown volume",
    service: "controller",
    method: "ValidateVolumeCapabilities",
    request: () => ({ volumeId: "local/ghost", volumeCapabilities: [MOUNT_EXT4] }),
    code: status.NOT_FOUND,
  },
  {
    what: "ValidateVolumeCapabilities unknown parameter",
    service: "controller",
    method: "ValidateVolumeCapabilities",
    request: () => ({ volumeId, volumeCapabilities: [MOUNT_EXT4], parameters: { colour: "blue" } }),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "ControllerGetVolume without id",
    service: "controller",
    method: "ControllerGetVolume",
    request: () => ({}),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "ControllerGetVolume unknown volume",
    service: "controller",
    method: "ControllerGetVolume",
    request: () => ({ volumeId: "local/ghost" }),
    code: status.NOT_FOUND,
  },
  {
    what: "ControllerGetVolume id of another node",
    service: "controller",
    method: "ControllerGetVolume",
    request: () => ({ volumeId: "node-b/pvc-base" }),
    code: status.NOT_FOUND,
  },
  {
    what: "ControllerExpandVolume without id",
    service: "controller",
    method: "ControllerExpandVolume",
    request: () => ({ capacityRange: { requiredBytes: MiB } }),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "ControllerExpandVolume without capacity",
    service: "controller",
    method: "ControllerExpandVolume",
    request: () => ({ volumeId }),
    code: status.INVALID_ARGUMENT,
    says: "capacity_range",
  },
  {
    what: "ControllerExpandVolume unknown volume",
    service: "controller",
    method: "ControllerExpandVolume",
    request: () => ({ volumeId: "local/ghost", capacityRange: { requiredBytes: MiB } }),
    code: status.NOT_FOUND,
  },
  {
    what: "ControllerExpandVolume shrink",
    service: "controller",
    method: "ControllerExpandVolume",
    request: () => ({ volumeId, capacityRange: { requiredBytes: MiB, limitBytes: 2 * MiB } }),
    code: status.OUT_OF_RANGE,
    says: "never shrink",
  },
  {
    what: "ControllerPublishVolume is not offered",
    service: "controller",
    method: "ControllerPublishVolume",
    request: () => ({ volumeId, nodeId: "local", volumeCapability: MOUNT_EXT4 }),
    code: status.UNIMPLEMENTED,
  },
  {
    what: "GetCapacity unknown parameter",
    service: "controller",
    method: "GetCapacity",
    request: () => ({ parameters: { speed: "fast" } }),
    code: status.INVALID_ARGUMENT,
  },
  // Listing
  {
    what: "ListVolumes malformed token",
    service: "controller",
    method: "ListVolumes",
    request: () => ({ startingToken: "not-a-token" }),
    code: status.ABORTED,
  },
  {
    what: "ListVolumes token of ListSnapshots",
    service: "controller",
    method: "ListVolumes",
    request: () => ({ startingToken: "s1" }),
    code: status.ABORTED,
  },
  {
    what: "ListVolumes stale token (never issued)",
    service: "controller",
    method: "ListVolumes",
    request: () => ({ startingToken: "v999999" }),
    code: status.ABORTED,
  },
  {
    what: "ListVolumes negative max_entries",
    service: "controller",
    method: "ListVolumes",
    request: () => ({ maxEntries: -1 }),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "ListSnapshots malformed token",
    service: "controller",
    method: "ListSnapshots",
    request: () => ({ startingToken: "%%%" }),
    code: status.ABORTED,
  },
  {
    what: "ListSnapshots negative max_entries",
    service: "controller",
    method: "ListSnapshots",
    request: () => ({ maxEntries: -5 }),
    code: status.INVALID_ARGUMENT,
  },
  // Snapshots
  {
    what: "CreateSnapshot without name",
    service: "controller",
    method: "CreateSnapshot",
    request: () => ({ sourceVolumeId: volumeId }),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "CreateSnapshot without source",
    service: "controller",
    method: "CreateSnapshot",
    request: () => ({ name: "snap-x" }),
    code: status.INVALID_ARGUMENT,
    says: "source_volume_id",
  },
  {
    what: "CreateSnapshot of an unknown volume",
    service: "controller",
    method: "CreateSnapshot",
    request: () => ({ name: "snap-x", sourceVolumeId: "local/ghost" }),
    code: status.NOT_FOUND,
  },
  {
    what: "CreateSnapshot same name, other volume",
    service: "controller",
    method: "CreateSnapshot",
    request: () => ({ name: "snap-base", sourceVolumeId: otherVolumeId }),
    code: status.ALREADY_EXISTS,
  },
  {
    what: "CreateSnapshot unknown parameter",
    service: "controller",
    method: "CreateSnapshot",
    request: () => ({ name: "snap-x", sourceVolumeId: volumeId, parameters: { retain: "7d" } }),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "DeleteSnapshot without id",
    service: "controller",
    method: "DeleteSnapshot",
    request: () => ({}),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "GetSnapshot without id",
    service: "controller",
    method: "GetSnapshot",
    request: () => ({}),
    code: status.INVALID_ARGUMENT,
    says: "snapshot_id is required",
  },
  {
    what: "GetSnapshot unknown snapshot",
    service: "controller",
    method: "GetSnapshot",
    request: () => ({ snapshotId: "local/no-such-snap" }),
    code: status.NOT_FOUND,
    says: "local/no-such-snap",
  },
  {
    what: "GetSnapshot malformed id",
    service: "controller",
    method: "GetSnapshot",
    request: () => ({ snapshotId: "../../etc/passwd" }),
    code: status.NOT_FOUND,
  },
  {
    what: "GetSnapshot id of another node",
    service: "controller",
    method: "GetSnapshot",
    request: () => ({ snapshotId: "node-b/snap-base" }),
    code: status.NOT_FOUND,
  },
  {
    what: "GetSnapshot of a volume's id",
    service: "controller",
    method: "GetSnapshot",
    request: () => ({ snapshotId: volumeId }),
    code: status.NOT_FOUND,
  },
  // Node
  {
    what: "NodeStageVolume without id",
    service: "node",
    method: "NodeStageVolume",
    request: () => stage({ volumeId: "" }),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "NodeStageVolume without staging path",
    service: "node",
    method: "NodeStageVolume",
    request: () => stage({ stagingTargetPath: "" }),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "NodeStageVolume relative staging path",
    service: "node",
    method: "NodeStageVolume",
    request: () => stage({ stagingTargetPath: "staging/pvc" }),
    code: status.INVALID_ARGUMENT,
    says: "absolute",
  },
  {
    what: "NodeStageVolume staging path escaping with ..",
    service: "node",
    method: "NodeStageVolume",
    request: () => stage({ stagingTargetPath: `${root}/staging/../../../../etc` }),
    code: status.INVALID_ARGUMENT,
    says: "normalized",
  },
  {
    what: "NodeStageVolume staging path outside the root",
    service: "node",
    method: "NodeStageVolume",
    request: () => stage({ stagingTargetPath: "/etc/snapblock" }),
    code: status.INVALID_ARGUMENT,
    says: "outside",
  },
  {
    what: "NodeStageVolume without capability",
    service: "node",
    method: "NodeStageVolume",
    request: () => stage({ volumeCapability: null }),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "NodeStageVolume multi-node capability",
    service: "node",
    method: "NodeStageVolume",
    request: () => stage({ volumeCapability: cap("MULTI_NODE_MULTI_WRITER") }),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "NodeStageVolume unknown volume",
    service: "node",
    method: "NodeStageVolume",
    request: () => stage({ volumeId: "local/ghost" }),
    code: status.NOT_FOUND,
  },
  {
    what: "NodeStageVolume wrong filesystem",
    service: "node",
    method: "NodeStageVolume",
    request: () => stage({ volumeCapability: cap("SINGLE_NODE_WRITER", "xfs") }),
    code: status.INVALID_ARGUMENT,
    says: "xfs",
  },
  {
    what: "NodeStageVolume as block, a volume made for a filesystem",
    service: "node",
    method: "NodeStageVolume",
    request: () => stage({ volumeCapability: BLOCK }),
    code: status.FAILED_PRECONDITION,
    says: "was created for a mounted ext4 filesystem and is being staged as a raw block device",
  },
  {
    what: "NodeStageVolume as a filesystem, a volume made for raw block",
    service: "node",
    method: "NodeStageVolume",
    request: () => stage({ volumeId: otherVolumeId }),
    code: status.FAILED_PRECONDITION,
    says: "allowModeChange",
  },
  {
    what: "NodePublishVolume as block, a volume made for a filesystem",
    service: "node",
    method: "NodePublishVolume",
    request: () => publish({ volumeCapability: BLOCK }),
    code: status.FAILED_PRECONDITION,
    says: "is being published as a raw block device",
  },
  {
    what: "NodeUnstageVolume without id",
    service: "node",
    method: "NodeUnstageVolume",
    request: () => ({ stagingTargetPath: `${root}/staging/pvc-base` }),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "NodeUnstageVolume without staging path",
    service: "node",
    method: "NodeUnstageVolume",
    request: () => ({ volumeId }),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "NodePublishVolume without target path",
    service: "node",
    method: "NodePublishVolume",
    request: () => publish({ targetPath: "" }),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "NodePublishVolume without staging path",
    service: "node",
    method: "NodePublishVolume",
    request: () => publish({ stagingTargetPath: "" }),
    code: status.FAILED_PRECONDITION,
    says: "stage",
  },
  {
    what: "NodePublishVolume target path with NUL",
    service: "node",
    method: "NodePublishVolume",
    request: () => publish({ targetPath: `${root}/pods/p1\u0000/vol` }),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "NodePublishVolume target path escaping the root",
    service: "node",
    method: "NodePublishVolume",
    request: () => publish({ targetPath: `${root}/../escape` }),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "NodePublishVolume without capability",
    service: "node",
    method: "NodePublishVolume",
    request: () => publish({ volumeCapability: null }),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "NodeUnpublishVolume without target path",
    service: "node",
    method: "NodeUnpublishVolume",
    request: () => ({ volumeId }),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "NodeGetVolumeStats without path",
    service: "node",
    method: "NodeGetVolumeStats",
    request: () => ({ volumeId }),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "NodeGetVolumeStats unknown volume",
    service: "node",
    method: "NodeGetVolumeStats",
    request: () => ({ volumeId: "local/ghost", volumePath: `${root}/pods/p1/vol` }),
    code: status.NOT_FOUND,
  },
  {
    what: "NodeExpandVolume without path",
    service: "node",
    method: "NodeExpandVolume",
    request: () => ({ volumeId }),
    code: status.INVALID_ARGUMENT,
  },
  {
    what: "NodeExpandVolume beyond the volume's size",
    service: "node",
    method: "NodeExpandVolume",
    request: () => ({
      volumeId,
      volumePath: `${root}/pods/p1/vol`,
      capacityRange: { requiredBytes: 1024 * MiB },
    }),
    code: status.OUT_OF_RANGE,
    says: "ControllerExpandVolume",
  },
  // Required fields before existence (CSI spec; csi-sanity sends these with unknown volume ids):
  // a missing field is INVALID_ARGUMENT whatever the volume id, for ids of this node that name
  // nothing and for ids that cannot be ours.
  ...unknownIds.flatMap((ghost): Case[] => [
    {
      what: `NodeStageVolume without staging path, unknown volume ${ghost}`,
      service: "node",
      method: "NodeStageVolume",
      request: () => stage({ volumeId: ghost, stagingTargetPath: "" }),
      code: status.INVALID_ARGUMENT,
      says: "staging_target_path is required",
    },
    {
      what: `NodeStageVolume without capability, unknown volume ${ghost}`,
      service: "node",
      method: "NodeStageVolume",
      request: () => stage({ volumeId: ghost, volumeCapability: null }),
      code: status.INVALID_ARGUMENT,
      says: "volume_capability",
    },
    {
      what: `NodeUnstageVolume without staging path, unknown volume ${ghost}`,
      service: "node",
      method: "NodeUnstageVolume",
      request: () => ({ volumeId: ghost }),
      code: status.INVALID_ARGUMENT,
      says: "staging_target_path is required",
    },
    {
      what: `NodePublishVolume without target path, unknown volume ${ghost}`,
      service: "node",
      method: "NodePublishVolume",
      request: () => publish({ volumeId: ghost, targetPath: "" }),
      code: status.INVALID_ARGUMENT,
      says: "target_path is required",
    },
    {
      what: `NodePublishVolume without capability, unknown volume ${ghost}`,
      service: "node",
      method: "NodePublishVolume",
      request: () => publish({ volumeId: ghost, volumeCapability: null }),
      code: status.INVALID_ARGUMENT,
      says: "volume_capability",
    },
    {
      what: `NodeUnpublishVolume without target path, unknown volume ${ghost}`,
      service: "node",
      method: "NodeUnpublishVolume",
      request: () => ({ volumeId: ghost }),
      code: status.INVALID_ARGUMENT,
      says: "target_path is required",
    },
    {
      what: `NodeGetVolumeStats without volume path, unknown volume ${ghost}`,
      service: "node",
      method: "NodeGetVolumeStats",
      request: () => ({ volumeId: ghost }),
      code: status.INVALID_ARGUMENT,
      says: "volume_path is required",
    },
    {
      what: `NodeGetVolumeStats at a relative path, unknown volume ${ghost}`,
      service: "node",
      method: "NodeGetVolumeStats",
      request: () => ({ volumeId: ghost, volumePath: "some/path" }),
      code: status.NOT_FOUND,
    },
    {
      what: `NodeExpandVolume without volume path, unknown volume ${ghost}`,
      service: "node",
      method: "NodeExpandVolume",
      request: () => ({ volumeId: ghost }),
      code: status.INVALID_ARGUMENT,
      says: "volume_path is required",
    },
    {
      what: `CreateSnapshot without name, unknown volume ${ghost}`,
      service: "controller",
      method: "CreateSnapshot",
      request: () => ({ sourceVolumeId: ghost }),
      code: status.INVALID_ARGUMENT,
      says: "name",
    },
    {
      what: `ValidateVolumeCapabilities without capabilities, unknown volume ${ghost}`,
      service: "controller",
      method: "ValidateVolumeCapabilities",
      request: () => ({ volumeId: ghost }),
      code: status.INVALID_ARGUMENT,
      says: "volume_capabilities is required",
    },
    {
      what: `ControllerExpandVolume without capacity, unknown volume ${ghost}`,
      service: "controller",
      method: "ControllerExpandVolume",
      request: () => ({ volumeId: ghost }),
      code: status.INVALID_ARGUMENT,
      says: "capacity_range is required",
    },
    {
      what: `CreateVolume without capabilities, from unknown volume ${ghost}`,
      service: "controller",
      method: "CreateVolume",
      request: () => ({ name: "pvc-bad", volumeContentSource: { volume: { volumeId: ghost } } }),
      code: status.INVALID_ARGUMENT,
      says: "volume_capabilities",
    },
  ]),
  // NodeGetVolumeStats where the volume is not (CSI spec: "does not exist on specified volume_path").
  {
    what: "NodeGetVolumeStats of a volume at a relative path",
    service: "node",
    method: "NodeGetVolumeStats",
    request: () => ({ volumeId, volumePath: "some/path" }),
    code: status.NOT_FOUND,
    says: "not at volume_path",
  },
  {
    what: "NodeGetVolumeStats of a volume at a path outside the roots",
    service: "node",
    method: "NodeGetVolumeStats",
    request: () => ({ volumeId, volumePath: "/etc" }),
    code: status.NOT_FOUND,
    says: "outside",
  },
  {
    what: "NodeGetVolumeStats of an unstaged volume at an existing directory",
    service: "node",
    method: "NodeGetVolumeStats",
    request: () => ({ volumeId, volumePath: `${root}/pods/empty-dir` }),
    code: status.NOT_FOUND,
    says: "not staged",
  },
  {
    what: "NodeGetVolumeStats at a path with NUL",
    service: "node",
    method: "NodeGetVolumeStats",
    request: () => ({ volumeId, volumePath: `${root}/pods/p1\u0000/vol` }),
    code: status.INVALID_ARGUMENT,
    says: "NUL",
  },
];

describe("bad requests get the CSI spec's codes", () => {
  it("has at least 40 cases", () => {
    expect(cases.length).toBeGreaterThanOrEqual(40);
  });

  it.each(cases.map((c) => [c.what, c] as const))("%s", async (_what, c) => {
    const client = local.clients[c.service];
    const failure = await failureCode(callCsi(client, c.method, c.request()));
    expect({ code: status[failure.code], details: failure.details }).toMatchObject({ code: status[c.code] });
    expect(failure.details.length).toBeGreaterThan(10);
    if (c.says) expect(failure.details).toContain(c.says);
  });

  it("leaves nothing behind: the bad calls created no volume or snapshot", async () => {
    const volumes = await callCsi<{ entries: Array<{ volume: { volumeId: string } }> }>(
      local.clients.controller,
      "ListVolumes",
      {},
    );
    expect(volumes.entries.map((e) => e.volume.volumeId).sort()).toEqual([otherVolumeId, volumeId].sort());
    const snapshots = await callCsi<{ entries: Array<{ snapshot: { snapshotId: string } }> }>(
      local.clients.controller,
      "ListSnapshots",
      {},
    );
    expect(snapshots.entries.map((e) => e.snapshot.snapshotId)).toEqual([snapshotId]);
  });
});
