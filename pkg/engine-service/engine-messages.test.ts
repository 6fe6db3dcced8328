import { describe, expect, it } from "vitest";
import {
  fromWireLimits,
  fromWireSnapshot,
  fromWireSpace,
  fromWireVolume,
  toWireLimits,
  toWireSnapshot,
  toWireVolume,
} from "./engine-messages.js";
import { loadEngineProto, loadSpaceProto } from "./engine-proto.js";
import type { EngineSnapshotLimits, EngineSpace, EngineVolume } from "../engine-api/index.js";

describe("engine proto", () => {
  it("defines every EngineApi and EngineReplication operation and the chunk streams", () => {
    const { service } = loadEngineProto();
    expect(Object.keys(service).sort()).toEqual(
      [
        "CreateSnapshot",
        "CreateVolume",
        "DeleteSnapshot",
        "DeleteVolume",
        "GetCapacity",
        "GetNodeInfo",
        "GetSpace",
        "GetSnapshot",
        "GetVolume",
        "ListSnapshots",
        "ListVolumes",
        "ReadSnapshotChunks",
        "ResizeVolume",
        "SetProtection",
        "ReplicateSnapshot",
        "SetHolders",
        "GrantPull",
        "AddTombstones",
        "ListTombstones",
        "ListChunks",
        "ReadChunks",
        "ListBlockMetadata",
        "CreateSnapshotGroup",
        "HoldWrites",
        "ReleaseWrites",
        "PutGroupRecord",
        "GetGroupRecord",
        "DeleteGroupRecord",
        "PinPoint",
      ].sort(),
    );
    for (const stream of ["ReadSnapshotChunks", "ListChunks", "ReadChunks", "ListBlockMetadata"]) {
      expect(service[stream]?.responseStream, stream).toBe(true);
    }
  });

  it("round-trips volumes (with source and copy progress) and snapshots through the wire form", () => {
    const { service } = loadEngineProto();
    const def = service.CreateVolume;
    const volume: EngineVolume = {
      name: "pvc-1",
      id: 7,
      sizeBytes: 2 ** 40,
      createdAt: new Date(1_700_000_000_123),
      source: { kind: "snapshot", name: "snap-1" },
      copy: { state: "failed", copiedChunks: 3, totalChunks: 9, error: "disk full" },
      protection: "1s for 10m, 1m for 1h",
      attachmentProblem: "nbdfuse (pid 42) is not running",
      meta: { "csi.name": "pvc-1" },
    };
    // Through the real serializer of the response type, as grpc-js would send it.
    const bytes = service.ResizeVolume!.responseSerialize(toWireVolume(volume));
    expect(fromWireVolume(service.ResizeVolume!.responseDeserialize(bytes) as never)).toEqual(volume);
    const plain: EngineVolume = { name: "v", id: 1, sizeBytes: 4096, createdAt: new Date(5), meta: {} };
    const plainBytes = service.ResizeVolume!.responseSerialize(toWireVolume(plain));
    expect(fromWireVolume(service.ResizeVolume!.responseDeserialize(plainBytes) as never)).toEqual(plain);
    expect(def?.path).toBe("/snapblock.engine.v1.Engine/CreateVolume");
    const snap = {
      name: "s",
      id: 2,
      sizeBytes: 8192,
      createdAt: new Date(9),
      sourceVolume: "v",
      meta: { a: "b" },
    };
    const snapBytes = service.CreateSnapshot!.responseSerialize(toWireSnapshot(snap));
    expect(fromWireSnapshot(service.CreateSnapshot!.responseDeserialize(snapBytes) as never)).toEqual(snap);
    // A pinned point says so; an unpinned one has no `pinned` (as LocalEngine answers).
    const pinned = { ...snap, name: "rp--v-9", pinned: true };
    const pinnedBytes = service.PinPoint!.responseSerialize(toWireSnapshot(pinned));
    expect(fromWireSnapshot(service.PinPoint!.responseDeserialize(pinnedBytes) as never)).toEqual(pinned);
    const request = { name: "rp--v-9", pinned: true };
    expect(service.PinPoint!.requestDeserialize(service.PinPoint!.requestSerialize(request))).toEqual(
      request,
    );
  });

  it("carries the freeze flag of CreateSnapshot; a request without it asks for the freeze", () => {
    const { service } = loadEngineProto();
    const def = service.CreateSnapshot!;
    const skip = { volume: "v", name: "s", meta: {}, skipFilesystemFreeze: true };
    expect(def.requestDeserialize(def.requestSerialize(skip))).toMatchObject(skip);
    const older: unknown = def.requestDeserialize(def.requestSerialize({ volume: "v", name: "s", meta: {} }));
    expect(older).toMatchObject({ skipFilesystemFreeze: false });
  });
});

describe("space and limits on the wire", () => {
  it("round-trips a pool's space figures and snapshot limits", () => {
    const { service } = loadEngineProto();
    const space: EngineSpace = {
      pool: {
        totalBytes: 2 ** 40,
        allocatedBytes: 3 * 2 ** 30,
        freeBytes: 2 ** 40 - 3 * 2 ** 30,
        provisionedBytes: 2 ** 41,
        overcommitRatio: 2.5,
        reclaimableBytes: 65536,
        copyReservedBytes: 0,
        sharedBytes: 2 ** 30,
        chunkSize: 65536,
      },
      volumes: [
        {
          name: "v",
          sizeBytes: 2 ** 34,
          mappedBytes: 2 ** 31,
          exclusiveBytes: 2 ** 30,
          sharedBytes: 2 ** 30,
          snapshotOnlyBytes: 5 * 65536,
          snapshotCount: 3,
          pointCount: 2,
          protection: "1s for 10m",
        },
      ],
      snapshots: [
        {
          name: "s",
          sourceVolume: "v",
          sizeBytes: 2 ** 34,
          mappedBytes: 2 ** 31,
          exclusiveBytes: 0,
          sharedBytes: 2 ** 31,
        },
      ],
    };
    const bytes = service.GetSpace!.responseSerialize(space);
    expect(fromWireSpace(service.GetSpace!.responseDeserialize(bytes) as never)).toEqual(space);
    expect(loadSpaceProto().service.GetSpace?.path).toBe("/snapblock.engine.v1.Space/GetSpace");

    const limits: EngineSnapshotLimits = {
      maxSnapshots: 7,
      maxSnapshotBytes: 2 ** 33,
      names: { maxSnapshots: "a", maxSnapshotBytes: "b" },
    };
    const req = { volume: "v", name: "s", meta: {}, limits: toWireLimits(limits) };
    const decoded = service.CreateSnapshot!.requestDeserialize(
      service.CreateSnapshot!.requestSerialize(req),
    ) as {
      limits: Parameters<typeof fromWireLimits>[0];
    };
    expect(fromWireLimits(decoded.limits)).toEqual(limits);
    const none = { volume: "v", name: "s", meta: {}, limits: toWireLimits(undefined) };
    const plain = service.CreateSnapshot!.requestDeserialize(
      service.CreateSnapshot!.requestSerialize(none),
    ) as {
      limits: Parameters<typeof fromWireLimits>[0];
    };
    expect(fromWireLimits(plain.limits)).toBeUndefined();
  });
});
