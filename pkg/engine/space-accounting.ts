import type { ChunkSpace } from "./chunk-space.js";
import { FANOUT, type Leaf, type TreeNode } from "./chunk-tree.js";
import type { Device, Metadata } from "./metadata.js";

/**
 * Who holds the pool's space, computed from the chunk tables on demand (docs/engine-format.md,
 * "Space accounting").
 *
 * A chunk is *held* by the devices whose tables map it. It is *exclusive* to a device when that
 * device alone maps it: deleting the device gives it back. A chunk that the snapshots of one
 * volume alone map (one or several of them) is held *only by that volume's snapshots*: deleting
 * them all gives it back. Everything else in use is *shared*.
 *
 * Partial chunks: a partial chunk P also holds a reference on the chunk B it replaced, for the
 * blocks it has not written yet. That reference is not a mapping: once no table maps B, the
 * background filler completes P from B (P is already allocated) and B is freed. So B counts for
 * the devices that map B, and a B that no table maps any more counts as *reclaimable* (the filler
 * is giving it back). With this rule the exclusive bytes of a device are exactly what deleting it
 * frees once the filler has run, and
 *
 *   allocated = sum of exclusive + shared + reclaimable
 *
 * Cost: one visit of every distinct table node (shared subtrees once, not once per device),
 * i.e. proportional to the metadata in memory, not to the number of snapshots times the volume
 * size. The per-slot work, which dominates, is remembered between calls (SpaceMemo) for the
 * leaves that did not change, so a call after a few writes costs a pass over the nodes plus the
 * slots of the changed leaves. The pool caches the whole result per metadata sequence number.
 */
export interface SpaceAccount {
  /** Metadata sequence number the figures are for. */
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
 * What one call leaves for the next: per leaf its mapped count, and per group of leaves (the
 * leaves covering the same logical chunks) the holders found for its chunks, valid while the
 * group has the same leaves, at the same versions, reached by the same holders.
 */
export class SpaceMemo {
  readonly leafMapped = new WeakMap<Leaf, { version: number; mapped: number }>();
  readonly groups = new Map<number, GroupMemo>();
}

interface GroupMemo {
  leaves: Leaf[];
  versions: number[];
  /** Stable holder keys of the leaves (device id, -volume id for a snapshot group, 0). */
  holders: number[];
  /** What the group's chunks add up to: pairs of stable holder key and chunk count. */
  tallies: number[];
  /** Calls since the group was last seen (groups that disappear are forgotten). */
  seenAt: number;
}

export function accountSpace(
  meta: Metadata,
  space: ChunkSpace,
  options: { groupOf?: SnapshotGroupOf; memo?: SpaceMemo } = {},
): SpaceAccount {
  const groupOf = options.groupOf ?? snapshotGroup;
  const memo = options.memo ?? new SpaceMemo();
  const pass = ++passes;
  // Labels are small integers so that the hot loops index arrays, not maps: device number n
  // (1..D) for "held by this device only", -g for "held by the snapshots of group g only"
  // (1..G), MIXED (0) for anything else. Stable keys (device ids, -volume ids) are what the memo
  // keeps, since the numbering changes from call to call.
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
  const stableOf = (l: number): number => (l > 0 ? deviceList[l - 1]!.id : l < 0 ? -groupIds[-l]! : MIXED);
  const labelOfStable = (k: number): number =>
    k > 0 ? labelOf.get(k)! : k < 0 ? -groupNumber.get(-k)! : MIXED;

  // 1. Every distinct node once, by height; leaves grouped by the logical chunk of their first slot.
  const byHeight: TreeNode[][] = [];
  const groups = new Map<number, Leaf[]>();
  const seen = new Set<TreeNode>();
  const collect = (node: TreeNode, h: number, base: number): void => {
    if (seen.has(node)) return;
    seen.add(node);
    (byHeight[h] ??= []).push(node);
    if (node.isLeaf) {
      const g = groups.get(base);
      if (g) g.push(node);
      else groups.set(base, [node]);
      return;
    }
    const childSpan = FANOUT ** h;
    for (let i = 0; i < FANOUT; i++) {
      const child = node.children[i];
      if (child) collect(child, h - 1, base + i * childSpan);
    }
  };
  for (const d of deviceList) if (d.table.root) collect(d.table.root, d.table.levels, 0);

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
        for (const child of node.children) if (child) n += mapped.get(child)!;
      }
      mapped.set(node, n);
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
      const l = label.get(node)!;
      for (const child of node.children) if (child) label.set(child, join(label.get(child), l));
    }
  }

  // 4. Each mapped chunk's holders. A chunk mapped by several leaves (a shadowed leaf and its
  // original) sits in the same slot of each, since those leaves cover the same logical chunks;
  // so each group of leaves is joined slot by slot, and only groups that changed are visited.
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
  const backing = space.backings();
  const leafRefs = (chunk: number): number => {
    const rc = space.refCount(chunk);
    return rc <= 1 || backing.size === 0 ? rc : rc - (backing.get(chunk) ?? 0);
  };
  // Per group: chunks counted per holder label, in runs (consecutive chunks mostly share one).
  const counted = new Map<number, number>();
  let runLabel = MIXED;
  let runCount = 0;
  const flush = (): void => {
    if (runCount > 0) counted.set(runLabel, (counted.get(runLabel) ?? 0) + runCount);
    runCount = 0;
  };
  const tally = (l: number): void => {
    if (l !== runLabel) {
      flush();
      runLabel = l;
    }
    runCount++;
  };
  const labels: number[] = [];
  const values: number[] = [];
  const joined: number[] = [];
  const counts: number[] = [];
  for (const [base, leaves] of groups) {
    const k = leaves.length;
    for (let j = 0; j < k; j++) labels[j] = label.get(leaves[j]!)!;
    const known = memo.groups.get(base);
    if (
      known &&
      known.leaves.length === k &&
      leaves.every(
        (leaf, j) =>
          known.leaves[j] === leaf &&
          known.versions[j] === leaf.version &&
          known.holders[j] === stableOf(labels[j]!),
      )
    ) {
      known.seenAt = pass;
      for (let t = 0; t < known.tallies.length; t += 2)
        apply(labelOfStable(known.tallies[t]!), known.tallies[t + 1]!);
      continue;
    }
    counted.clear();
    for (let i = 0; i < FANOUT; i++) {
      let distinct = 0;
      for (let j = 0; j < k; j++) {
        const v = leaves[j]!.slots[i]!;
        if (v === 0) continue;
        const l = labels[j]!;
        if (leafRefs(v - 1) === 1) {
          tally(l);
          continue;
        }
        let x = 0;
        while (x < distinct && values[x] !== v) x++;
        if (x === distinct) {
          values[x] = v;
          joined[x] = l;
          counts[x] = 1;
          distinct++;
        } else {
          joined[x] = join(joined[x], l);
          counts[x]!++;
        }
      }
      // Every leaf mapping the chunk is in its group (the consistency check proves the counts),
      // unless that invariant failed: then the chunk counts as shared, never as exclusive.
      for (let x = 0; x < distinct; x++) tally(counts[x] === leafRefs(values[x]! - 1) ? joined[x]! : MIXED);
    }
    flush();
    const tallies: number[] = [];
    for (const [l, n] of counted) {
      apply(l, n);
      tallies.push(stableOf(l), n);
    }
    memo.groups.set(base, {
      leaves: leaves.slice(),
      versions: leaves.map((leaf) => leaf.version),
      holders: labels.slice(0, k).map(stableOf),
      tallies,
      seenAt: pass,
    });
  }
  for (const [base, g] of memo.groups) if (g.seenAt !== pass) memo.groups.delete(base);

  const devices = new Map<number, { mapped: number; exclusive: number }>();
  deviceList.forEach((d, i) => {
    devices.set(d.id, {
      mapped: d.table.root ? mapped.get(d.table.root)! : 0,
      exclusive: exclusiveOf[i + 1]!,
    });
  });
  const snapshotOnly = new Map<number, number>();
  for (let g = 1; g < groupIds.length; g++) snapshotOnly.set(groupIds[g]!, groupOnly[g]!);
  let reclaimableChunks = 0;
  for (const [chunk] of backing) if (space.leafRefCount(chunk) === 0) reclaimableChunks++;
  return { seq: meta.seq, devices, snapshotOnly, exclusiveChunks, sharedChunks, reclaimableChunks };
}

let passes = 0;
