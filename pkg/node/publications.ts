import { createHash } from "node:crypto";
import { promises as fs } from "node:fs";
import path from "node:path";
import { SnapblockError } from "../errors/index.js";
import { syncDirectory, writeFileAtomically } from "../files/index.js";

/**
 * What this plugin published where, one record per target path, kept on disk so that it outlives
 * a restart between NodePublishVolume and NodeUnpublishVolume. It is what lets unpublish remove
 * only what the plugin made: the CSI spec has the SP delete "the file or directory it created" at
 * target_path, and a NodeUnpublishVolume for a volume that is not published there succeeds
 * without touching anything. A target that existed before the publish (a directory the CO made,
 * a user's file) is recorded as not created, and is never removed.
 */
export interface Publication {
  /** CSI volume id and engine name of the volume published at targetPath. */
  volumeId: string;
  engineName: string;
  targetPath: string;
  /** What the plugin created there, if it did: a directory (filesystem) or an empty file (raw block). */
  kind: "directory" | "file";
  created: boolean;
}

const SUFFIX = ".json";

export class PublicationStore {
  constructor(private readonly dir: string) {}

  async get(targetPath: string): Promise<Publication | undefined> {
    const file = this.fileOf(targetPath);
    let text: string;
    try {
      text = await fs.readFile(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw new SnapblockError("IO", `could not read publication record ${file}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    return parsePublication(text, file, targetPath);
  }

  async put(p: Publication): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeFileAtomically(
      this.fileOf(p.targetPath),
      `${JSON.stringify({ version: 1, ...p }, null, 2)}\n`,
      {
        what: "publication record",
      },
    );
  }

  async remove(targetPath: string): Promise<void> {
    const file = this.fileOf(targetPath);
    try {
      await fs.unlink(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw new SnapblockError(
        "IO",
        `could not remove publication record ${file}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    await syncDirectory(this.dir);
  }

  /** Target paths are up to 4 KiB: the file is named by a hash, the path is inside. */
  private fileOf(targetPath: string): string {
    return path.join(
      this.dir,
      `${createHash("sha256").update(targetPath).digest("hex").slice(0, 40)}${SUFFIX}`,
    );
  }
}

/** Every field checked: a record decides what gets unmounted and removed, so a bad one is never guessed at. */
function parsePublication(text: string, file: string, targetPath: string): Publication {
  const corrupt = (why: string) =>
    new SnapblockError(
      "CORRUPT",
      `publication record ${file} is not valid (${why}); inspect and remove it by hand`,
    );
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new SnapblockError("CORRUPT", `publication record ${file} is not JSON: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (typeof value !== "object" || value === null) throw corrupt("not an object");
  const r = value as Record<string, unknown>;
  if (r.version !== 1) throw corrupt(`unknown version ${JSON.stringify(r.version)}`);
  if (r.targetPath !== targetPath) throw corrupt(`it is for ${JSON.stringify(r.targetPath)}`);
  if (typeof r.volumeId !== "string" || typeof r.engineName !== "string") throw corrupt("no volume");
  if (r.kind !== "directory" && r.kind !== "file") throw corrupt("bad kind");
  if (typeof r.created !== "boolean") throw corrupt("bad created flag");
  return { volumeId: r.volumeId, engineName: r.engineName, targetPath, kind: r.kind, created: r.created };
}
