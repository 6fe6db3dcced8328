import type { ChunkSpace } from "./chunk-space.js";
import type { ChunkTables, TreeNode } from "./chunk-tree.js";
import type { Metadata } from "./metadata.js";
import type { CheckReport } from "./types.js";

const MAX_PROBLEMS = 50;

/**
 * Recounts every reference from scratch and compares with what the pool keeps:
 * - each table node's count equals the number of tables and nodes pointing at it;
 * - each chunk's count equals the number of leaves pointing at it (no leak: nothing counted that
 *   no leaf points at; no double ownership: no chunk both free and mapped, or free twice);
 * - every mapped chunk is inside the pool, and no table maps past its device's end;
 * - free + pending + in-use chunks account for every chunk below the high-water mark.
 */
export function checkConsistency(
  meta: Metadata,
  space: ChunkSpace,
  tables: ChunkTables,
  committedSeq: number,
): CheckReport {
  const problems: string[] = [];
  const problem = (p: string): void => {
    if (problems.length < MAX_PROBLEMS) problems.push(p);
  };
  space.reclaim(committedSeq);

  const nodeRefs = new Map<TreeNode, number>();
  const chunkRefs = new Map<number, number>();
  const seen = new Set<TreeNode>();
  for (const d of meta.devices.values()) {
    if (d.table.root) nodeRefs.set(d.table.root, (nodeRefs.get(d.table.root) ?? 0) + 1);
    const chunks = meta.chunksFor(d.sizeBytes);
    tables.forEachMapped(d.table, (c) => {
      if (c >= chunks) problem(`${d.kind} '${d.name}' maps chunk ${c}, past its end (${chunks} chunks)`);
    });
    tables.forEachNode(d.table, seen, (node) => {
      if (node.isLeaf) {
        for (const v of node.slots) if (v !== 0) chunkRefs.set(v - 1, (chunkRefs.get(v - 1) ?? 0) + 1);
      } else {
        for (const child of node.children) if (child) nodeRefs.set(child, (nodeRefs.get(child) ?? 0) + 1);
      }
    });
    if (meta.byName(d.kind).get(d.name) !== d)
      problem(`${d.kind} '${d.name}' is missing from the name index`);
  }
  // A partial chunk holds one reference on its backing chunk.
  const backingRefs = new Map<number, number>();
  for (const [chunk, partial] of space.partials) {
    if (!chunkRefs.has(chunk)) problem(`partial chunk ${chunk} is not mapped by any table`);
    if (partial.backing >= 0) {
      chunkRefs.set(partial.backing, (chunkRefs.get(partial.backing) ?? 0) + 1);
      backingRefs.set(partial.backing, (backingRefs.get(partial.backing) ?? 0) + 1);
    }
  }
  for (const [chunk, n] of space.backings()) {
    if (backingRefs.get(chunk) !== n)
      problem(`chunk ${chunk} backs ${backingRefs.get(chunk) ?? 0} partial chunk(s) but is counted for ${n}`);
  }
  for (const [chunk, n] of backingRefs) {
    if (space.backingRefCount(chunk) !== n)
      problem(
        `chunk ${chunk} backs ${n} partial chunk(s) but is counted for ${space.backingRefCount(chunk)}`,
      );
  }
  for (const [node, n] of nodeRefs) {
    if (node.rc !== n) problem(`a table node has reference count ${node.rc} but ${n} referrer(s)`);
  }
  let leaves = 0;
  let inners = 0;
  for (const node of seen)
    if (node.isLeaf) leaves++;
    else inners++;
  if (leaves !== tables.liveLeaves || inners !== tables.liveInners) {
    problem(
      `table nodes: ${leaves} leaves and ${inners} inner nodes reachable, ${tables.liveLeaves} and ${tables.liveInners} live (leak)`,
    );
  }

  for (const [chunk, n] of chunkRefs) {
    if (chunk >= space.capacity)
      problem(`chunk ${chunk} is mapped but the pool has ${space.capacity} chunks`);
    if (space.refCount(chunk) !== n) {
      problem(`chunk ${chunk} has reference count ${space.refCount(chunk)} but ${n} leaf reference(s)`);
    }
  }
  const { free, pending, reserved } = space.freeSnapshot();
  const unmapped = new Set<number>();
  // Reserved chunks belong to a write in flight: neither free nor mapped yet.
  for (const c of [...free, ...pending, ...reserved]) {
    if (chunkRefs.has(c)) problem(`chunk ${c} is both free and mapped (double ownership)`);
    if (unmapped.has(c)) problem(`chunk ${c} is on the free lists twice`);
    if (c >= space.highWaterMark) problem(`free chunk ${c} is above the high-water mark`);
    unmapped.add(c);
  }
  for (let c = 0; c < space.highWaterMark; c++) {
    if (space.refCount(c) > 0 && !chunkRefs.has(c))
      problem(`chunk ${c} is counted in use but nothing maps it (leak)`);
    if (space.refCount(c) === 0 && !unmapped.has(c)) problem(`chunk ${c} is neither mapped nor free (leak)`);
  }
  return { ok: problems.length === 0, chunksInUse: chunkRefs.size, chunksFree: space.free, problems };
}
