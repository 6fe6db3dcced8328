import { SnapblockError } from "../errors/index.js";
import type {
  EngineApi,
  EngineBlockMetadataPage,
  EngineCapacity,
  EngineListing,
  EngineMeta,
  EnginePointPins,
  EngineSnapshot,
  EngineSpace,
  EngineVolume,
} from "../engine-api/index.js";

/**
 * The engine of a node that an id names but discovery does not list (removed from --nodes, Node
 * object gone, or not announced yet). Every call is UNAVAILABLE naming the node, never NOT_FOUND:
 * "not found" would let DeleteVolume succeed and orphan the data on a node that is only missing
 * for a while.
 */
export class MissingNodeEngine implements EngineApi, EnginePointPins {
  constructor(readonly nodeId: string) {}

  isReady(): boolean {
    return false;
  }

  private fail(): Promise<never> {
    return Promise.reject(
      new SnapblockError(
        "CLOSED",
        `node ${this.nodeId} is not among the nodes this controller knows (node discovery); is its node plugin running and announced?`,
      ),
    );
  }

  createVolume(): Promise<EngineVolume> {
    return this.fail();
  }
  getVolume(): Promise<EngineVolume | undefined> {
    return this.fail();
  }
  listVolumes(): Promise<EngineListing<EngineVolume>> {
    return this.fail();
  }
  resizeVolume(): Promise<EngineVolume> {
    return this.fail();
  }
  setProtection(): Promise<EngineVolume> {
    return this.fail();
  }
  deleteVolume(): Promise<void> {
    return this.fail();
  }
  createSnapshot(): Promise<EngineSnapshot> {
    return this.fail();
  }
  async *blockMetadata(): AsyncGenerator<EngineBlockMetadataPage> {
    yield await this.fail();
  }
  getSnapshot(): Promise<EngineSnapshot | undefined> {
    return this.fail();
  }
  listSnapshots(): Promise<EngineListing<EngineSnapshot>> {
    return this.fail();
  }
  deleteSnapshot(): Promise<void> {
    return this.fail();
  }
  pinPoint(): Promise<EngineSnapshot> {
    return this.fail();
  }
  createSnapshotGroup(): Promise<EngineSnapshot[]> {
    return this.fail();
  }
  holdWrites(): Promise<{ holdId: string }> {
    return this.fail();
  }
  releaseWrites(): Promise<{ heldThroughout: boolean }> {
    return this.fail();
  }
  putGroupRecord(): Promise<void> {
    return this.fail();
  }
  getGroupRecord(): Promise<EngineMeta | undefined> {
    return this.fail();
  }
  deleteGroupRecord(): Promise<void> {
    return this.fail();
  }
  capacity(): Promise<EngineCapacity> {
    return this.fail();
  }
  space(): Promise<EngineSpace> {
    return this.fail();
  }
  engineFor(nodeId: string): EngineApi | undefined {
    return nodeId === this.nodeId ? this : undefined;
  }
  nodeEngines(): EngineApi[] {
    return [this];
  }
  placeVolume(): Promise<EngineApi> {
    return this.fail();
  }
}
