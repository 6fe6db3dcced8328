import type { ChunkSpace } from "./chunk-space.js";
import { FANOUT, type Leaf, type TreeNode } from "./chunk-tree.js";
import type { Device, Metadata } from "./metadata.js";

/**
 * Who holds the pool's space, computed from the chunk tables on demand (docs/space.md).
 *
 * A chunk is *held* by the devices whose tables map it. It is *exclusive* to a device when that
 * device alone maps it: deleting the device gives it back. A chunk that the snapshots of one
 * volume alone map (one or several of them) is held *only by that volume's snapshots*: deleting
 * them all gives it back. Everything else in use is *shared*.
 *
 * Partial chunks: a partial chunk P also holds a reference on the chunk B it replaced, for the
 * blocks it has not written yet. That reference is not a mapping: once no table maps B, the
 * background filler completes P from B (P is already allocated) and B is freed (or, where only
 * snapshots hold P and other partial chunks read from B too, B goes when those snapshots do:
 * pool.ts, worthFilling). So B counts for the devices that map B, and a B that no table maps
 * any more counts as *reclaimable* (the filler, or deleting those snapshots, gives it back). With this rule the exclusive bytes of a device are exactly what deleting it
 * frees once the filler has run, and
 *
 *   allocated = sum of exclusive + shared + reclaimable
 *
 * Cost: one visit of every distinct table node (shared subtrees once, not once per device),
 * i.e. proportional to the metadata in memory, not to the number of snapshots times the volume
 * size. It can run at once (accountSpace) or in slices that yield to I/O (accountSpaceSliced);
 * the pool caches the result per metadata sequence number and chooses between the two by the
 * size of its tables (pool.ts, recentSpaceAccount).
 */
export interface SpaceAccount {
  /** Metadata sequence number the figures are for (when the computation started). */
  seq: number;
  /** Per device id: chunks its table maps, and chunks only it maps. */
  devices: Map<number, { mapped: number; exclusive: number }>;
  /** Per volume id: chunks only its snapshots map (one or several of them). */
  snapshotOnly: Map<number, number>;
  /** Distinct chunks mapped by exactly one device. */
  exclusiveChunks: number;
  /** Distinct chunks mapped by more than one device. */
  sharedChunks: number;
  /** Chunks no table maps that partial chunks still read from (freed as the filler runs). */
  reclaimableChunks: number;
}

/** The label of a chunk or node nobody holds alone (neither one device nor one snapshot group). */
const MIXED = 0;

/**
 * The snapshot group of a device: the id of the volume it was taken of, or undefined for a
 * volume. Recovery points (engine snapshots taken on a policy) join their volume's group too.
 */
export type SnapshotGroupOf = (device: Device) => number | undefined;

export const snapshotGroup: SnapshotGroupOf = (d) => (d.kind === "snapshot" ? d.sourceId : undefined);

/**
 * What one call leaves for the next: per leaf its mapped count (valid while the leaf's version is
 * the same), and the per-chunk scratch arrays, kept so that a call allocates nothing.
 */
export class SpaceMemo {
  readonly leafMapped = new WeakMap<Leaf, { version: number; mapped: number }>();
  /** Per physical chunk: the holder label found in this call (valid where stamp = the call's). */
  holder = new Int32Array(0);
  stamp = new Uint32Array(0);
  pass = 0;
}

export interface AccountOptions {
  groupOf?: SnapshotGroupOf;
  memo?: SpaceMemo;
}

/** The whole computation at once (exact: nothing can change while it runs). */
export function accountSpace(meta: Metadata, space: ChunkSpace, options: AccountOptions = {}): SpaceAccount {
  const steps = accountingSteps(meta, space, options);
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
  }
}

/**
 * The computation in slices of at most `sliceMs` of the event loop each, so that I/O goes on
 * between them. Exact when no mapping changes while it runs; otherwise each chunk is counted as
 * its leaves were when they were visited, which is off by at most the chunks remapped meanwhile
 * (the next computation is right again).
 */
export async function accountSpaceSliced(
  meta: Metadata,
  space: ChunkSpace,
  options: AccountOptions & { sliceMs?: number } = {},
): Promise<SpaceAccount> {
  const steps = accountingSteps(meta, space, options);
  const sliceMs = options.sliceMs ?? 2;
  for (;;) {
    const until = performance.now() + sliceMs;
    for (;;) {
      const step = steps.next();
      if (step.done) return step.value;
      if (performance.now() >= until) break;
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** Work between two yields: small enough that a slice stays near its budget. */
const NODES_PER_STEP = 2048;
const LEAVES_PER_STEP = 64;
const CHUNKS_PER_STEP = 1 << 18;

function* accountingSteps(
  meta: Metadata,
  space: ChunkSpace,
  options: AccountOptions,
): Generator<void, SpaceAccount> {
  const seq = meta.seq;
  const groupOf = options.groupOf ?? snapshotGroup;
  const memo = options.memo ?? new SpaceMemo();
  // Labels are small integers so that the hot loops index arrays, not maps: device number n
  // (1..D) for "held by this device only", -g for "held by the snapshots of group g only"
  // (1..G), MIXED (0) for anything else.
  const deviceList = [...meta.devices.values()];
  const labelOf = new Map<number, number>(); // device id -> its label
  const groupIds: number[] = [0]; // group number -> volume id
  const groupNumber = new Map<number, number>(); // volume id -> group number
  const groupOfLabel = new Int32Array(deviceList.length + 1); // device label -> -group, or 0
  deviceList.forEach((d, i) => {
    labelOf.set(d.id, i + 1);
    const volumeId = groupOf(d);
    if (volumeId === undefined) return;
    let g = groupNumber.get(volumeId);
    if (g === undefined) {
      g = groupIds.length;
      groupIds.push(volumeId);
      groupNumber.set(volumeId, g);
    }
    groupOfLabel[i + 1] = -g;
  });
  const join = (a: number | undefined, b: number): number => {
    if (a === undefined || a === b) return b;
    if (a === MIXED || b === MIXED) return MIXED;
    const ga = a < 0 ? a : groupOfLabel[a]!;
    const gb = b < 0 ? b : groupOfLabel[b]!;
    return ga !== 0 && ga === gb ? ga : MIXED;
  };
  // 1. Every distinct node once, by height.
  const byHeight: TreeNode[][] = [];
  const seen = new Set<TreeNode>();
  const stack: Array<[TreeNode, number]> = [];
  let work = 0;
  for (const d of deviceList) {
    if (d.table.root) stack.push([d.table.root, d.table.levels]);
    while (stack.length > 0) {
      const [node, h] = stack.pop()!;
      if (seen.has(node)) continue;
      seen.add(node);
      (byHeight[h] ??= []).push(node);
      if (!node.isLeaf) for (const child of node.children) if (child) stack.push([child, h - 1]);
      if (++work % NODES_PER_STEP === 0) yield;
    }
  }

  // 2. Mapped chunks per node, bottom-up: a device maps what its root covers.
  const mapped = new Map<TreeNode, number>();
  for (let h = 0; h < byHeight.length; h++) {
    for (const node of byHeight[h] ?? []) {
      let n = 0;
      if (node.isLeaf) {
        const known = memo.leafMapped.get(node);
        if (known?.version === node.version) n = known.mapped;
        else {
          for (let i = 0; i < FANOUT; i++) if (node.slots[i] !== 0) n++;
          memo.leafMapped.set(node, { version: node.version, mapped: n });
        }
      } else {
        // (?? 0: a child that appeared while a sliced run waited is counted next time)
        for (const child of node.children) if (child) n += mapped.get(child) ?? 0;
      }
      mapped.set(node, n);
      if (++work % NODES_PER_STEP === 0) yield;
    }
  }

  // 3. Who reaches each node, top-down: a node's parents all sit one level higher (a node keeps
  // its height in every table that shares it), so they are labelled before it.
  const label = new Map<TreeNode, number>();
  for (const d of deviceList) {
    const root = d.table.root;
    if (root) label.set(root, join(label.get(root), labelOf.get(d.id)!));
  }
  for (let h = byHeight.length - 1; h > 0; h--) {
    for (const node of byHeight[h] ?? []) {
      if (node.isLeaf) continue;
      const l = label.get(node) ?? MIXED; // (sliced: a node whose parent changed meanwhile)
      for (const child of node.children) if (child) label.set(child, join(label.get(child), l));
      if (++work % NODES_PER_STEP === 0) yield;
    }
  }

  // 4. Each mapped chunk's holders: the join of the labels of every leaf mapping it (every live
  // leaf is visited, so every mapping is seen), in a per-chunk array, leaf by leaf; then one scan
  // of the chunks counts them. A stamp per chunk tells this call's entries from older ones.
  const chunks = space.highWaterMark;
  if (memo.holder.length < chunks) {
    memo.holder = new Int32Array(Math.max(chunks, memo.holder.length * 2));
    memo.stamp = new Uint32Array(memo.holder.length);
    memo.pass = 0;
  }
  if (memo.pass >= 0xfffffffe) {
    memo.stamp.fill(0);
    memo.pass = 0;
  }
  const pass = ++memo.pass;
  const holder = memo.holder;
  const stamp = memo.stamp;
  let leaves = 0;
  for (const leaf of byHeight[0] ?? []) {
    if (++leaves % LEAVES_PER_STEP === 0) yield;
    const l = label.get(leaf) ?? MIXED;
    const slots = (leaf as Leaf).slots;
    for (let i = 0; i < FANOUT; i++) {
      const v = slots[i]!;
      if (v === 0) continue;
      const c = v - 1;
      if (stamp[c] !== pass) {
        stamp[c] = pass;
        holder[c] = l;
      } else if (holder[c] !== l) holder[c] = join(holder[c], l);
    }
  }
  const exclusiveOf = new Float64Array(deviceList.length + 1);
  const groupOnly = new Float64Array(groupIds.length);
  let exclusiveChunks = 0;
  let sharedChunks = 0;
  const apply = (l: number, n: number): void => {
    if (l > 0) {
      exclusiveOf[l]! += n;
      exclusiveChunks += n;
      groupOnly[-groupOfLabel[l]!]! += n; // group 0 is "none": never read
      return;
    }
    sharedChunks += n;
    if (l < 0) groupOnly[-l]! += n;
  };
  // Neighbouring chunks mostly have the same holder: count runs, apply each run once.
  let runLabel = MIXED;
  let runCount = 0;
  for (let c = 0; c < chunks; c++) {
    if (c % CHUNKS_PER_STEP === CHUNKS_PER_STEP - 1) yield;
    if (stamp[c] !== pass) continue;
    const l = holder[c]!;
    if (l === runLabel) {
      runCount++;
      continue;
    }
    if (runCount > 0) apply(runLabel, runCount);
    runLabel = l;
    runCount = 1;
  }
  if (runCount > 0) apply(runLabel, runCount);

  const devices = new Map<number, { mapped: number; exclusive: number }>();
  deviceList.forEach((d, i) => {
    devices.set(d.id, {
      mapped: d.table.root ? (mapped.get(d.table.root) ?? 0) : 0,
      exclusive: exclusiveOf[i + 1]!,
    });
  });
  const snapshotOnly = new Map<number, number>();
  for (let g = 1; g < groupIds.length; g++) snapshotOnly.set(groupIds[g]!, groupOnly[g]!);
  let reclaimableChunks = 0;
  for (const [chunk] of space.backings()) if (space.leafRefCount(chunk) === 0) reclaimableChunks++;
  return { seq, devices, snapshotOnly, exclusiveChunks, sharedChunks, reclaimableChunks };
}
