import { describe, expect, it } from "vitest";
import { SnapblockError, StatusError } from "../errors/index.js";
import { ControllerSnapshots } from "./controller-snapshots.js";
import { ControllerVolumes } from "./controller-volumes.js";
import type { CreateVolumeRequest__Output } from "./generated/csi/v1/CreateVolumeRequest.js";
import { OperationLocks } from "./operation-locks.js";
import type { CallScope } from "../rpc/index.js";
import type {
  EngineApi,
  EngineBlockMetadataRequest,
  EngineCreateVolumeOptions,
  EngineSnapshot,
  EngineVolume,
} from "../engine-api/index.js";

/** An engine whose createVolume and createSnapshot wait until released: calls stay in flight. */
class SlowEngine implements EngineApi {
  readonly nodeId = "n1";
  volumes = new Map<string, EngineVolume>();
  snapshots = new Map<string, EngineSnapshot>();
  private gate: Promise<void>;
  release!: () => void;
  private nextId = 1;

  constructor() {
    this.gate = new Promise((r) => (this.release = r));
  }
  isReady = () => true;
  // Group snapshots: not used by these tests (tested end to end with real processes).
  createSnapshotGroup = (): Promise<EngineSnapshot[]> =>
    Promise.reject(new SnapblockError("INTERNAL", "unused"));
  holdWrites = (): Promise<{ holdId: string }> => Promise.reject(new SnapblockError("INTERNAL", "unused"));
  releaseWrites = () => Promise.resolve({ heldThroughout: false });
  putGroupRecord = (): Promise<void> => Promise.reject(new SnapblockError("INTERNAL", "unused"));
  getGroupRecord = (): Promise<Record<string, string> | undefined> => Promise.resolve(undefined);
  deleteGroupRecord = (): Promise<void> => Promise.resolve();
  engineFor = (nodeId: string) => (nodeId === this.nodeId ? this : undefined);
  nodeEngines = () => [this];
  placeVolume = () => Promise.resolve(this);
  async createVolume(o: EngineCreateVolumeOptions): Promise<EngineVolume> {
    await this.gate;
    const v: EngineVolume = {
      name: o.name,
      id: this.nextId++,
      sizeBytes: o.sizeBytes,
      createdAt: new Date(),
      meta: o.meta,
    };
    this.volumes.set(o.name, v);
    return v;
  }
  getVolume = (name: string) => Promise.resolve(this.volumes.get(name));
  listVolumes = () => Promise.resolve({ items: [...this.volumes.values()], idWatermark: this.nextId });
  resizeVolume = (): Promise<EngineVolume> => Promise.reject(new SnapblockError("INTERNAL", "unused"));
  setProtection = (): Promise<EngineVolume> => Promise.reject(new SnapblockError("INTERNAL", "unused"));
  deleteVolume = (name: string): Promise<void> =>
    this.volumes.delete(name) ? Promise.resolve() : Promise.reject(new SnapblockError("NOT_FOUND", "gone"));
  async createSnapshot(o: {
    volume: string;
    name: string;
    meta: Record<string, string>;
  }): Promise<EngineSnapshot> {
    await this.gate;
    const s: EngineSnapshot = {
      name: o.name,
      id: this.nextId++,
      sizeBytes: 1,
      createdAt: new Date(),
      sourceVolume: o.volume,
      meta: o.meta,
    };
    this.snapshots.set(o.name, s);
    return s;
  }
  getSnapshot = (name: string) => Promise.resolve(this.snapshots.get(name));
  listSnapshots = () => Promise.resolve({ items: [...this.snapshots.values()], idWatermark: this.nextId });
  deleteSnapshot = () => Promise.resolve();
  // Nothing is ever written to these volumes: no ranges, only the snapshot's size.
  blockMetadata = async function* (this: SlowEngine, r: EngineBlockMetadataRequest) {
    const s = await this.getSnapshot(r.snapshot);
    if (!s) throw new SnapblockError("NOT_FOUND", `no snapshot ${r.snapshot}`);
    yield { sizeBytes: s.sizeBytes, ranges: [] };
  };
  capacity = () =>
    Promise.resolve({
      totalBytes: 2 ** 40,
      freeBytes: 2 ** 40,
      provisionedBytes: 0,
      availableBytes: 2 ** 40,
      maxVolumeBytes: 2 ** 50,
    });
  space = () => Promise.reject(new StatusError("UNIMPLEMENTED", "not used by these tests"));
}

const scope: CallScope = { note: () => undefined };
const request = (name: string): CreateVolumeRequest__Output => ({
  name,
  capacityRange: { requiredBytes: 1 << 20, limitBytes: 0 },
  volumeCapabilities: [{ block: {}, accessMode: { mode: "SINGLE_NODE_WRITER" }, accessType: "block" }],
  parameters: {},
  secrets: {},
  volumeContentSource: null,
  accessibilityRequirements: null,
  mutableParameters: {},
});

describe("controller locking", () => {
  it("answers ABORTED to a second call for a volume whose creation is in flight, then succeeds", async () => {
    const engine = new SlowEngine();
    const locks = new OperationLocks();
    const volumes = new ControllerVolumes({ engine, locks });
    const first = volumes.createVolume(request("pvc-a"), scope);
    await expect(volumes.createVolume(request("pvc-a"), scope)).rejects.toBeInstanceOf(StatusError);
    await expect(volumes.deleteVolume({ volumeId: "n1/pvc-a", secrets: {} }, scope)).rejects.toThrow(
      /in progress/,
    );
    // Another volume is not in the way.
    const other = volumes.createVolume(request("pvc-b"), scope);
    engine.release();
    const [a] = await Promise.all([first, other]);
    expect(a.volume?.volumeId).toBe("n1/pvc-a");
    expect((await volumes.createVolume(request("pvc-a"), scope)).volume).toEqual(a.volume);
    expect(locks.size).toBe(0);
  });

  it("lets snapshots of one volume proceed together but not a delete of that volume", async () => {
    const engine = new SlowEngine();
    engine.volumes.set("pvc-a", { name: "pvc-a", id: 99, sizeBytes: 1, createdAt: new Date(), meta: {} });
    const locks = new OperationLocks();
    const volumes = new ControllerVolumes({ engine, locks });
    const snapshots = new ControllerSnapshots({ engine, locks });
    const snap = (name: string) =>
      snapshots.createSnapshot({ name, sourceVolumeId: "n1/pvc-a", secrets: {}, parameters: {} }, scope);
    const pending = [snap("s1"), snap("s2"), snap("s3")];
    await expect(volumes.deleteVolume({ volumeId: "n1/pvc-a", secrets: {} }, scope)).rejects.toThrow(
      /CreateSnapshot/,
    );
    await expect(snap("s1")).rejects.toBeInstanceOf(StatusError);
    engine.release();
    expect((await Promise.all(pending)).map((r) => r.snapshot?.snapshotId)).toEqual([
      "n1/s1",
      "n1/s2",
      "n1/s3",
    ]);
    await volumes.deleteVolume({ volumeId: "n1/pvc-a", secrets: {} }, scope);
  });
});
