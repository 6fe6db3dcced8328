import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { PublicationStore } from "./publications.js";

describe("PublicationStore", () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const dir of dirs) await fs.rm(dir, { recursive: true, force: true });
  });
  const store = async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "snapblock-published-"));
    dirs.push(dir);
    return { dir: path.join(dir, "published"), store: new PublicationStore(path.join(dir, "published")) };
  };

  it("keeps one record per target path, across instances, until removed", async () => {
    const { dir, store: a } = await store();
    const target = `/var/lib/kubelet/pods/p/${"x".repeat(250)}/mount`;
    expect(await a.get(target)).toBeUndefined();
    const record = {
      volumeId: "n/v",
      engineName: "v",
      targetPath: target,
      kind: "directory",
      created: true,
    } as const;
    await a.put(record);
    expect((await fs.stat(dir)).mode & 0o777).toBe(0o700);
    expect(await new PublicationStore(dir).get(target)).toEqual(record);
    expect(await a.get(`${target}2`)).toBeUndefined();
    await a.remove(target);
    await a.remove(target);
    expect(await a.get(target)).toBeUndefined();
  });

  it("refuses a record it cannot trust instead of guessing", async () => {
    const { dir, store: a } = await store();
    await a.put({ volumeId: "n/v", engineName: "v", targetPath: "/t", kind: "file", created: false });
    const [name] = await fs.readdir(dir);
    const file = path.join(dir, name!);
    const good = JSON.parse(await fs.readFile(file, "utf8")) as Record<string, unknown>;
    for (const bad of [
      "not json",
      JSON.stringify({ ...good, targetPath: "/other" }),
      JSON.stringify({ ...good, created: "yes" }),
    ]) {
      await fs.writeFile(file, bad);
      await expect(a.get("/t")).rejects.toMatchObject({ code: "CORRUPT" });
    }
  });
});
