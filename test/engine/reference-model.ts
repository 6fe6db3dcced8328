/**
 * A deliberately simple reference model of a pool: every volume and snapshot as a plain byte
 * array. Operations are plain data (so a child process can print them and a parent replay them),
 * generated from a seeded Prng against the model's current state, applied to the engine and to
 * the model alike.
 */
import { Prng, type Pool } from "../../pkg/engine/index.js";

export type Op =
  | { t: "createVolume"; name: string; size: number }
  | { t: "write"; vol: string; off: number; len: number; seed: number; fua: boolean }
  | { t: "zero"; vol: string; off: number; len: number; trim: boolean }
  | { t: "read"; dev: string; kind: "volume" | "snapshot"; off: number; len: number }
  | { t: "flush"; vol: string }
  | { t: "snapshot"; vol: string; name: string }
  | { t: "restore"; snap: string; name: string; full: boolean; grow: number }
  | { t: "clone"; vol: string; name: string; full: boolean }
  | { t: "deleteVolume"; name: string }
  | { t: "deleteSnapshot"; name: string }
  | { t: "resize"; vol: string; size: number };

/**
 * The annotations every device is created with (what the CSI layer keeps there: its name), made
 * in the same commit as the device: after a crash a device exists with exactly these or not at
 * all. Derived from the name, so the ops (and their random draws) are as they were before.
 */
export function annotationsOf(name: string): Record<string, string> {
  return { "csi.name": `csi-${name}`, "csi.params": JSON.stringify({ name, fsType: "ext4" }) };
}

/** Whether a completed op made everything before it durable (flush, FUA, metadata operations). */
export function isDurabilityPoint(op: Op): boolean {
  return op.t !== "write" && op.t !== "zero" && op.t !== "read" ? true : op.t === "write" && op.fua;
}

export class Model {
  volumes = new Map<string, Buffer>();
  snapshots = new Map<string, Buffer>();
  counter = 0;

  clone(): Model {
    const m = new Model();
    m.volumes = new Map(this.volumes);
    m.snapshots = new Map(this.snapshots);
    m.counter = this.counter;
    return m;
  }

  /** Applies an op to the model. Buffers are replaced, never mutated, so clones stay cheap. */
  apply(op: Op): void {
    switch (op.t) {
      case "createVolume":
        this.volumes.set(op.name, Buffer.alloc(op.size));
        return;
      case "write": {
        const next = Buffer.from(this.volumes.get(op.vol)!);
        Prng.fill(next.subarray(op.off, op.off + op.len), op.seed);
        this.volumes.set(op.vol, next);
        return;
      }
      case "zero": {
        const next = Buffer.from(this.volumes.get(op.vol)!);
        next.fill(0, op.off, op.off + op.len);
        this.volumes.set(op.vol, next);
        return;
      }
      case "read":
      case "flush":
        return;
      case "snapshot":
        this.snapshots.set(op.name, this.volumes.get(op.vol)!);
        return;
      case "restore": {
        const src = this.snapshots.get(op.snap)!;
        const next = Buffer.alloc(src.length + op.grow);
        src.copy(next);
        this.volumes.set(op.name, next);
        return;
      }
      case "clone":
        this.volumes.set(op.name, this.volumes.get(op.vol)!);
        return;
      case "deleteVolume":
        this.volumes.delete(op.name);
        return;
      case "deleteSnapshot":
        this.snapshots.delete(op.name);
        return;
      case "resize": {
        const next = Buffer.alloc(op.size);
        this.volumes.get(op.vol)!.copy(next);
        this.volumes.set(op.vol, next);
        return;
      }
    }
  }

  /** A random valid op for the current state. `chunk` shapes the I/O sizes. */
  nextOp(g: Prng, chunk: number, limits: { maxVolumes: number; maxSnapshots: number; maxSize: number }): Op {
    const vols = [...this.volumes.keys()];
    const snaps = [...this.snapshots.keys()];
    const name = (p: string): string => `${p}${++this.counter}`;
    const r = g.next();
    if (vols.length === 0 || (r < 0.04 && vols.length < limits.maxVolumes)) {
      const size = (1 + g.int(limits.maxSize / 512)) * 512;
      return { t: "createVolume", name: name("vol-"), size };
    }
    const vol = g.pick(vols);
    const size = this.volumes.get(vol)!.length;
    const range = (maxLen: number): { off: number; len: number } => {
      const aligned = g.chance(0.4);
      let off = aligned ? g.int(Math.ceil(size / chunk)) * chunk : g.int(size);
      if (off >= size) off = 0;
      let len = aligned ? chunk * (1 + g.int(3)) : 1 + g.int(maxLen);
      len = Math.min(len, size - off);
      return { off, len };
    };
    if (r < 0.5)
      return { t: "write", vol, ...range(chunk * 2 + 100), seed: g.nextU32(), fua: g.chance(0.05) };
    if (r < 0.58) return { t: "zero", vol, ...range(chunk * 4), trim: g.chance(0.5) };
    if (r < 0.7) {
      const dev = snaps.length > 0 && g.chance(0.3) ? g.pick(snaps) : vol;
      const kind = this.snapshots.has(dev) && dev !== vol ? "snapshot" : "volume";
      const devSize = (kind === "volume" ? this.volumes : this.snapshots).get(dev)!.length;
      const off = g.int(devSize);
      return { t: "read", dev, kind, off, len: Math.min(devSize - off, 1 + g.int(chunk * 3)) };
    }
    if (r < 0.76) return { t: "flush", vol };
    if (r < 0.84 && snaps.length < limits.maxSnapshots) return { t: "snapshot", vol, name: name("snap-") };
    if (r < 0.88 && snaps.length > 0 && vols.length < limits.maxVolumes) {
      return {
        t: "restore",
        snap: g.pick(snaps),
        name: name("restored-"),
        full: g.chance(0.3),
        grow: g.chance(0.3) ? 512 * g.int(64) : 0,
      };
    }
    if (r < 0.9 && vols.length < limits.maxVolumes)
      return { t: "clone", vol, name: name("clone-"), full: g.chance(0.3) };
    if (r < 0.93 && snaps.length > 0) return { t: "deleteSnapshot", name: g.pick(snaps) };
    if (r < 0.95 && vols.length > 1) return { t: "deleteVolume", name: vol };
    if (r < 0.97 && size + 4096 <= limits.maxSize * 2)
      return { t: "resize", vol, size: size + 512 * (1 + g.int(16)) };
    return { t: "write", vol, ...range(chunk + 1), seed: g.nextU32(), fua: false };
  }
}

/** Runs an op against the engine. Reads are compared with the model by the caller. */
export async function runOp(pool: Pool, op: Op): Promise<Buffer | undefined> {
  switch (op.t) {
    case "createVolume":
      await pool.createVolume(op.name, op.size, { annotations: annotationsOf(op.name) });
      return;
    case "write": {
      const h = pool.openVolume(op.vol);
      try {
        await h.write(op.off, Prng.fill(Buffer.alloc(op.len), op.seed), { fua: op.fua });
      } finally {
        h.close();
      }
      return;
    }
    case "zero": {
      const h = pool.openVolume(op.vol);
      try {
        if (op.trim) await h.trim(op.off, op.len);
        else await h.writeZeroes(op.off, op.len);
      } finally {
        h.close();
      }
      return;
    }
    case "read": {
      const h = op.kind === "volume" ? pool.openVolume(op.dev) : pool.openSnapshot(op.dev);
      try {
        return await h.read(op.off, op.len);
      } finally {
        h.close();
      }
    }
    case "flush": {
      const h = pool.openVolume(op.vol);
      try {
        await h.flush();
      } finally {
        h.close();
      }
      return;
    }
    case "snapshot":
      await pool.createSnapshot(op.vol, op.name, { annotations: annotationsOf(op.name) });
      return;
    case "restore": {
      const size = pool.getSnapshot(op.snap).sizeBytes + op.grow;
      await pool.restoreSnapshot(op.snap, op.name, {
        fullCopy: op.full,
        sizeBytes: size,
        annotations: annotationsOf(op.name),
      });
      return;
    }
    case "clone":
      await pool.cloneVolume(op.vol, op.name, { fullCopy: op.full, annotations: annotationsOf(op.name) });
      return;
    case "deleteVolume":
      await pool.deleteVolume(op.name);
      return;
    case "deleteSnapshot":
      await pool.deleteSnapshot(op.name);
      return;
    case "resize":
      await pool.resizeVolume(op.vol, op.size);
      return;
  }
}

/** Reads every volume and snapshot of a pool into a model. */
export async function modelFromPool(pool: Pool): Promise<Model> {
  const m = new Model();
  for (const v of pool.listVolumes()) {
    const h = pool.openVolume(v.name);
    m.volumes.set(v.name, await h.read(0, v.sizeBytes));
    h.close();
  }
  for (const s of pool.listSnapshots()) {
    const h = pool.openSnapshot(s.name);
    m.snapshots.set(s.name, await h.read(0, s.sizeBytes));
    h.close();
  }
  return m;
}

const SECTOR = 512;

/**
 * Checks a pool recovered after a crash against the states the model went through since the
 * last durability point (`states[0]`) up to the op that was interrupted (`states[last]`):
 * - every snapshot that existed durably exists and reads exactly as in the model;
 * - every volume's every sector holds that sector's content in one of the states (old or new,
 *   never another block's or another device's);
 * - devices created or deleted after the durability point may or may not exist;
 * - every device that exists has exactly the annotations it was created with (never none).
 * Returns a list of problems (empty when the pool keeps the contract).
 */
export async function verifyRecovered(pool: Pool, states: Model[]): Promise<string[]> {
  const problems: string[] = [];
  const durable = states[0]!;
  const actual = await modelFromPool(pool);
  for (const kind of ["volume", "snapshot"] as const) {
    for (const name of (kind === "volume" ? actual.volumes : actual.snapshots).keys()) {
      const got = JSON.stringify(pool.annotations(kind, name));
      if (got !== JSON.stringify(annotationsOf(name))) {
        problems.push(`${kind} ${name} has annotations ${got} after the crash, not those it was made with`);
      }
    }
  }
  for (const [name, content] of durable.snapshots) {
    const got = actual.snapshots.get(name);
    const stillThere = states.every((s) => s.snapshots.has(name));
    if (!got) {
      if (stillThere) problems.push(`snapshot ${name} is durable but missing after the crash`);
      continue;
    }
    if (!got.equals(content)) problems.push(`snapshot ${name} changed across the crash`);
  }
  for (const [name, got] of actual.snapshots) {
    if (!states.some((s) => s.snapshots.get(name)?.equals(got))) {
      problems.push(`snapshot ${name} after the crash matches no state it was in`);
    }
  }
  for (const name of durable.volumes.keys()) {
    if (!actual.volumes.has(name) && states.every((s) => s.volumes.has(name))) {
      problems.push(`volume ${name} is durable but missing after the crash`);
    }
  }
  for (const [name, got] of actual.volumes) {
    const candidates = states.map((s) => s.volumes.get(name)).filter((b): b is Buffer => b !== undefined);
    if (candidates.length === 0) {
      problems.push(`volume ${name} exists after the crash but never existed`);
      continue;
    }
    if (!candidates.some((c) => c.length === got.length)) {
      problems.push(
        `volume ${name} has size ${got.length}, matching no state (${candidates.map((c) => c.length).join(", ")})`,
      );
      continue;
    }
    for (let off = 0; off < got.length; off += SECTOR) {
      const sector = got.subarray(off, off + SECTOR);
      const ok = candidates.some(
        (c) =>
          c.length > off &&
          c.subarray(off, off + SECTOR).equals(sector.subarray(0, Math.min(SECTOR, c.length - off))),
      );
      if (!ok) {
        problems.push(`volume ${name} sector at ${off} holds content from no state it was in`);
        break;
      }
    }
  }
  return problems;
}
