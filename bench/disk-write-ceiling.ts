import { closeSync, fdatasyncSync, openSync, rmSync, writeSync } from "node:fs";
import path from "node:path";
import { Prng } from "../pkg/engine/index.js";

export interface DiskWriteResult {
  bytes: number;
  seconds: number;
}

/**
 * The disk side of a pull: `bytes` written into a new file in `dir` (the pools' filesystem) in
 * `writeBytes` writes, with an fdatasync every `syncEvery` writes and at the end, as a pull
 * commits its fills (pkg/engine/pending-fill.ts: COMMIT_EVERY). Synchronous calls from one
 * thread, nothing else: what the disk takes, not what the engine does.
 */
export function runDiskWrite(o: {
  dir: string;
  bytes: number;
  writeBytes: number;
  syncEvery: number;
}): DiskWriteResult {
  const file = path.join(o.dir, "disk-write-ceiling.bin");
  const data = Prng.fill(Buffer.alloc(o.writeBytes), 42);
  const started = performance.now();
  const fd = openSync(file, "w");
  try {
    let writes = 0;
    for (let offset = 0; offset < o.bytes; offset += o.writeBytes) {
      writeSync(fd, data, 0, Math.min(o.writeBytes, o.bytes - offset), offset);
      if (++writes % o.syncEvery === 0) fdatasyncSync(fd);
    }
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
  const seconds = (performance.now() - started) / 1000;
  rmSync(file, { force: true });
  return { bytes: o.bytes, seconds };
}
