import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { isSnapblockError } from "../errors/index.js";
import { MetadataStore } from "./metadata-store.js";

const dirs: string[] = [];
const fileIn = () => {
  const dir = mkdtempSync(path.join(tmpdir(), "snapblock-meta-"));
  dirs.push(dir);
  return path.join(dir, "csi-metadata.json");
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe("CSI metadata store", () => {
  it("persists, reloads, deletes and prunes", async () => {
    const file = fileIn();
    const store = await MetadataStore.open(file);
    await store.set("volume", "pvc-1", { "csi.name": "pvc-1" });
    await store.set("snapshot", "s-1", { "csi.name": "s 1" });
    await store.set("volume", "pvc-2", { "csi.name": "pvc-2" });
    await store.delete("volume", "pvc-2");
    const again = await MetadataStore.open(file);
    expect(again.get("volume", "pvc-1")).toEqual({ "csi.name": "pvc-1" });
    expect(again.get("snapshot", "s-1")).toEqual({ "csi.name": "s 1" });
    expect(again.has("volume", "pvc-2")).toBe(false);
    await again.prune("volume", () => false);
    expect((await MetadataStore.open(file)).names("volume")).toEqual([]);
    expect(existsSync(`${file}.tmp`)).toBe(false);
  });

  it("serializes concurrent changes without losing any", async () => {
    const file = fileIn();
    const store = await MetadataStore.open(file);
    await Promise.all([...Array(30).keys()].map((i) => store.set("volume", `v${i}`, { n: String(i) })));
    const reloaded = await MetadataStore.open(file);
    expect(reloaded.names("volume")).toHaveLength(30);
    expect((JSON.parse(readFileSync(file, "utf8")) as { version: number }).version).toBe(1);
  });

  it("refuses a corrupt or foreign file instead of starting empty", async () => {
    const file = fileIn();
    writeFileSync(file, "{not json");
    await expect(MetadataStore.open(file)).rejects.toSatisfy((err: unknown) =>
      isSnapblockError(err, "CORRUPT"),
    );
    writeFileSync(file, JSON.stringify({ version: 99, volumes: {}, snapshots: {} }));
    await expect(MetadataStore.open(file)).rejects.toSatisfy((err: unknown) =>
      isSnapblockError(err, "CORRUPT"),
    );
  });
});
