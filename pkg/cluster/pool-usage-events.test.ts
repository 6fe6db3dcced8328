import { describe, expect, it } from "vitest";
import { SnapblockError } from "../errors/index.js";
import { silentLogger } from "../log/index.js";
import { PVC_META, type EngineApi, type EngineCapacity, type EngineVolume } from "../engine-api/index.js";
import type { EventRecorder, ObjectRef } from "./event-recorder.js";
import { PoolUsageEvents } from "./pool-usage-events.js";

/** A node engine with a settable pool use; only what PoolUsageEvents calls is real. */
function node(nodeId: string, volumes: EngineVolume[]): EngineApi & { usedPercent: number; down: boolean } {
  const self = {
    nodeId,
    usedPercent: 0,
    down: false,
    capacity(): Promise<EngineCapacity> {
      if (self.down) return Promise.reject(new SnapblockError("CLOSED", `node ${nodeId} is down`));
      return Promise.resolve({
        totalBytes: 1000,
        freeBytes: 1000 - self.usedPercent * 10,
        provisionedBytes: 0,
        availableBytes: 0,
        maxVolumeBytes: 0,
      });
    },
    listVolumes: () => Promise.resolve({ items: volumes, idWatermark: 99 }),
    nodeEngines: () => [self as unknown as EngineApi],
  };
  return self as unknown as EngineApi & { usedPercent: number; down: boolean };
}

const volume = (name: string, pvc?: [string, string]): EngineVolume => ({
  name,
  id: 1,
  sizeBytes: 1,
  createdAt: new Date(0),
  meta: pvc ? { [PVC_META.namespace]: pvc[0], [PVC_META.name]: pvc[1] } : {},
});

describe("pool usage Events on the PVCs of a filling pool", () => {
  it("warns each PVC of the node once per level going up, and once when space is back", async () => {
    const a = node("node-a", [volume("v1", ["app", "data"]), volume("v2", ["db", "pg"]), volume("v3")]);
    const recorded: Array<{ involved: ObjectRef; type: string; reason: string; message: string }> = [];
    const events: EventRecorder = { record: (e) => recorded.push(e) };
    const cluster = { nodeEngines: () => [a] } as unknown as EngineApi;
    const watch = new PoolUsageEvents({ engine: cluster, events, logger: silentLogger });
    const reasons = () => recorded.map((e) => `${e.involved.namespace}/${e.involved.name}:${e.reason}`);

    a.usedPercent = 50;
    await watch.check();
    expect(recorded).toEqual([]);
    a.usedPercent = 85;
    await watch.check();
    await watch.check(); // no repeat at the same level
    expect(reasons()).toEqual(["app/data:PoolFilling", "db/pg:PoolFilling"]);
    expect(recorded[0]).toMatchObject({ type: "Warning", involved: { kind: "PersistentVolumeClaim" } });
    expect(recorded[0]!.message).toMatch(/node node-a .* over 80% used/);
    a.usedPercent = 100;
    await watch.check();
    expect(reasons().slice(2)).toEqual(["app/data:PoolFull", "db/pg:PoolFull"]);
    // A node that cannot answer keeps its level; a little freed space is no news.
    a.down = true;
    await watch.check();
    a.down = false;
    a.usedPercent = 99;
    await watch.check();
    expect(recorded).toHaveLength(4);
    a.usedPercent = 40;
    await watch.check();
    expect(reasons().slice(4)).toEqual(["app/data:PoolSpaceFreed", "db/pg:PoolSpaceFreed"]);
    expect(recorded[4]!.type).toBe("Normal");
  });
});
