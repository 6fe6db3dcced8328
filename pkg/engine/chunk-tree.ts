import type { ChunkSpace } from "./chunk-space.js";

/**
 * Chunk tables: for each volume and snapshot, a radix tree from logical chunk number to physical
 * chunk. Trees share structure: a snapshot or clone points at its source's root and bumps the
 * root's reference count, so creating one costs O(1) whatever the volume holds. A node shared by
 * several tables is copied ("shadowed") the first time one of them changes below it; the copy
 * takes a reference on each child, so sharing moves one level down at a time (lazily).
 *
 * Reference counts: a node's count is the number of parents (tables or nodes) pointing at it; a
 * chunk's count, kept by ChunkSpace, is the number of leaves pointing at it. A chunk may be
 * written in place only if every node on its path and the chunk itself have count 1, and that
 * exclusivity is durable (no uncommitted record made it so; see `unsharedAt`).
 */
export const FANOUT_SHIFT = 9;
export const FANOUT = 1 << FANOUT_SHIFT;
const MASK = FANOUT - 1;

export class Leaf {
  readonly isLeaf = true;
  rc = 1;
  /** Bumped whenever a slot changes: lets the space accounting reuse what it found before. */
  version = 0;
  /** Sequence number of the record that last brought `rc` down to 1 (0: never). */
  unsharedAt = 0;
  /** Physical chunk + 1, or 0 for a hole. */
  readonly slots: Uint32Array;
  constructor(slots?: Uint32Array) {
    this.slots = slots ?? new Uint32Array(FANOUT);
  }
}

export class Inner {
  readonly isLeaf = false;
  rc = 1;
  unsharedAt = 0;
  readonly children: (TreeNode | null)[];
  constructor(children?: (TreeNode | null)[]) {
    this.children = children ?? new Array<TreeNode | null>(FANOUT).fill(null);
  }
}

export type TreeNode = Leaf | Inner;

/** A table: its root and the number of inner levels above the leaves (0: the root is a leaf). */
export interface Table {
  root: TreeNode | null;
  levels: number;
}

/** Chunks covered by a node at height `h` (0 = leaf). */
export function span(h: number): number {
  return FANOUT ** (h + 1);
}

export function levelsFor(chunks: number): number {
  let levels = 0;
  while (span(levels) < chunks) levels++;
  return levels;
}

function indexAt(chunk: number, h: number): number {
  return Math.floor(chunk / FANOUT ** h) & MASK;
}

export interface Lookup {
  /** Physical chunk, or -1 for a hole. */
  chunk: number;
  /** Whether the chunk may be written in place (exclusively and durably owned). */
  inPlace: boolean;
}

export class ChunkTables {
  liveLeaves = 0;
  liveInners = 0;

  constructor(private readonly space: ChunkSpace) {}

  get memoryBytes(): number {
    // Leaf: 2 KiB of slots plus object overhead; inner: 512 pointers plus overhead.
    return this.liveLeaves * (FANOUT * 4 + 96) + this.liveInners * (FANOUT * 8 + 96);
  }

  newTable(chunks: number): Table {
    return { root: null, levels: levelsFor(chunks) };
  }

  /** A second table sharing all of `t` (snapshot, clone, restore). */
  share(t: Table): Table {
    if (t.root) t.root.rc++;
    return { root: t.root, levels: t.levels };
  }

  /** Makes room for `chunks` logical chunks by adding levels above the root. */
  grow(t: Table, chunks: number): void {
    while (span(t.levels) < chunks) {
      if (t.root) {
        const wrap = this.newInner();
        wrap.children[0] = t.root;
        t.root = wrap;
      }
      t.levels++;
    }
  }

  /** Drops a table (device deleted): releases everything only it held. */
  drop(t: Table, seq: number): void {
    if (t.root) this.releaseNode(t.root, seq);
    t.root = null;
  }

  lookup(t: Table, chunk: number, committedSeq: number): Lookup {
    let node = t.root;
    let inPlace = true;
    for (let h = t.levels; node; h--) {
      if (node.rc !== 1 || node.unsharedAt > committedSeq) inPlace = false;
      if (node.isLeaf) {
        const v = node.slots[chunk & MASK]!;
        if (v === 0) return { chunk: -1, inPlace: false };
        const phys = v - 1;
        if (this.space.refCount(phys) !== 1 || (this.space.unsharedAt.get(phys) ?? 0) > committedSeq) {
          inPlace = false;
        }
        return { chunk: phys, inPlace };
      }
      node = node.children[indexAt(chunk, h)] ?? null;
    }
    return { chunk: -1, inPlace: false };
  }

  /** Physical chunk mapped at `chunk`, or -1. */
  physical(t: Table, chunk: number): number {
    let node = t.root;
    for (let h = t.levels; node; h--) {
      if (node.isLeaf) return node.slots[chunk & MASK]! - 1;
      node = node.children[indexAt(chunk, h)] ?? null;
    }
    return -1;
  }

  /**
   * Maps logical `chunk` to physical `phys` (whose reference the caller already holds), or unmaps
   * it when `phys` is -1. Shared nodes on the path are shadowed; the chunk it replaces loses a
   * reference.
   */
  set(t: Table, chunk: number, phys: number, seq: number): void {
    if (phys < 0 && this.physical(t, chunk) < 0) return;
    if (!t.root) t.root = t.levels === 0 ? this.newLeaf() : this.newInner();
    let node = this.own(t.root, seq);
    t.root = node;
    for (let h = t.levels; !node.isLeaf; h--) {
      const i = indexAt(chunk, h);
      const child = node.children[i];
      const next: TreeNode = child ? this.own(child, seq) : h - 1 === 0 ? this.newLeaf() : this.newInner();
      node.children[i] = next;
      node = next;
    }
    const i = chunk & MASK;
    const old = node.slots[i]!;
    node.slots[i] = phys + 1;
    node.version++;
    if (old !== 0) this.space.release(old - 1, seq);
  }

  /** Unmaps logical chunks [first, first + count), dropping whole subtrees where covered. */
  unmapRange(t: Table, first: number, count: number, seq: number): void {
    if (!t.root || count <= 0) return;
    t.root = this.unmapIn(t.root, t.levels, 0, first, first + count, seq);
  }

  private unmapIn(
    node: TreeNode,
    h: number,
    base: number,
    lo: number,
    hi: number,
    seq: number,
  ): TreeNode | null {
    const end = base + span(h);
    if (hi <= base || lo >= end) return node;
    if (lo <= base && hi >= end) {
      this.releaseNode(node, seq);
      return null;
    }
    if (!this.anyMapped(node, h, base, lo, hi)) return node;
    const own = this.own(node, seq);
    if (own.isLeaf) {
      own.version++;
      for (let c = Math.max(lo, base); c < Math.min(hi, end); c++) {
        const v = own.slots[c - base]!;
        if (v !== 0) {
          own.slots[c - base] = 0;
          this.space.release(v - 1, seq);
        }
      }
      return own;
    }
    const childSpan = span(h - 1);
    for (let i = Math.floor((Math.max(lo, base) - base) / childSpan); i < FANOUT; i++) {
      const childBase = base + i * childSpan;
      if (childBase >= hi) break;
      const child = own.children[i];
      if (child) own.children[i] = this.unmapIn(child, h - 1, childBase, lo, hi, seq);
    }
    return own;
  }

  private anyMapped(node: TreeNode, h: number, base: number, lo: number, hi: number): boolean {
    if (node.isLeaf) {
      for (let c = Math.max(lo, base); c < Math.min(hi, base + FANOUT); c++)
        if (node.slots[c - base] !== 0) return true;
      return false;
    }
    const childSpan = span(h - 1);
    for (let i = 0; i < FANOUT; i++) {
      const child = node.children[i];
      const childBase = base + i * childSpan;
      if (
        child &&
        childBase < hi &&
        childBase + childSpan > lo &&
        this.anyMapped(child, h - 1, childBase, lo, hi)
      ) {
        return true;
      }
    }
    return false;
  }

  /** Visits every mapped chunk in ascending logical order. */
  forEachMapped(t: Table, visit: (chunk: number, phys: number, exclusive: boolean) => void): void {
    const walk = (node: TreeNode, h: number, base: number, exclusive: boolean): void => {
      const excl = exclusive && node.rc === 1;
      if (node.isLeaf) {
        for (let i = 0; i < FANOUT; i++) {
          const v = node.slots[i]!;
          if (v !== 0) visit(base + i, v - 1, excl && this.space.refCount(v - 1) === 1);
        }
        return;
      }
      const childSpan = span(h - 1);
      for (let i = 0; i < FANOUT; i++) {
        const child = node.children[i];
        if (child) walk(child, h - 1, base + i * childSpan, excl);
      }
    };
    if (t.root) walk(t.root, t.levels, 0, true);
  }

  /** Visits mapped logical chunks in [lo, hi) in ascending order, skipping empty subtrees. */
  forEachMappedIn(t: Table, lo: number, hi: number, visit: (chunk: number, phys: number) => void): void {
    const walk = (node: TreeNode, h: number, base: number): void => {
      if (node.isLeaf) {
        for (let c = Math.max(lo, base); c < Math.min(hi, base + FANOUT); c++) {
          const v = node.slots[c - base]!;
          if (v !== 0) visit(c, v - 1);
        }
        return;
      }
      const childSpan = span(h - 1);
      const firstChild = Math.max(0, Math.floor((lo - base) / childSpan));
      for (let i = firstChild; i < FANOUT; i++) {
        const childBase = base + i * childSpan;
        if (childBase >= hi) break;
        const child = node.children[i];
        if (child) walk(child, h - 1, childBase);
      }
    };
    if (t.root && lo < hi) walk(t.root, t.levels, 0);
  }

  /** Visits each distinct node reachable from `t` once per call of the visitor set `seen`. */
  forEachNode(t: Table, seen: Set<TreeNode>, visit: (node: TreeNode, h: number) => void): void {
    const walk = (node: TreeNode, h: number): void => {
      if (seen.has(node)) return;
      seen.add(node);
      visit(node, h);
      if (!node.isLeaf) for (const child of node.children) if (child) walk(child, h - 1);
    };
    if (t.root) walk(t.root, t.levels);
  }

  /**
   * Logical chunks whose mapping differs between `a` and `b`. Subtrees the two tables share are
   * skipped without being visited, so the cost follows what changed, not the volume's size.
   */
  diff(a: Table, b: Table, visit: (chunk: number) => void): void {
    this.walkDiff(a, b, (chunk) => {
      visit(chunk);
      return false;
    });
  }

  /** Whether any logical chunk's mapping differs between `a` and `b` (stops at the first). */
  differs(a: Table, b: Table): boolean {
    return this.walkDiff(a, b, () => true);
  }

  /** The walk of diff(); `visit` returns true to stop, and then so does this. */
  private walkDiff(a: Table, b: Table, visit: (chunk: number) => boolean): boolean {
    const levels = Math.max(a.levels, b.levels);
    // A root lower than `levels` stands for child 0 of virtual inner nodes above it.
    const childOf = (node: TreeNode | null, nodeH: number, h: number, i: number): TreeNode | null => {
      if (!node) return null;
      if (nodeH < h) return i === 0 ? node : null;
      return (node as Inner).children[i] ?? null;
    };
    const walk = (
      x: TreeNode | null,
      hx: number,
      y: TreeNode | null,
      hy: number,
      h: number,
      base: number,
    ): boolean => {
      if (x === y && hx === hy) return false;
      if (h === 0) {
        const xs = x ? (x as Leaf).slots : undefined;
        const ys = y ? (y as Leaf).slots : undefined;
        for (let i = 0; i < FANOUT; i++)
          if ((xs?.[i] ?? 0) !== (ys?.[i] ?? 0) && visit(base + i)) return true;
        return false;
      }
      const childSpan = span(h - 1);
      for (let i = 0; i < FANOUT; i++) {
        const cx = childOf(x, hx, h, i);
        const cy = childOf(y, hy, h, i);
        if ((cx || cy) && walk(cx, Math.min(hx, h - 1), cy, Math.min(hy, h - 1), h - 1, base + i * childSpan))
          return true;
      }
      return false;
    };
    return walk(a.root, a.levels, b.root, b.levels, levels, 0);
  }

  /**
   * Tree nodes entered by the resumable walks below (mappedFrom, diffFrom): a measure of their
   * work that tests compare between volume sizes (it must follow what is mapped or changed, not
   * the size).
   */
  nodesVisited = 0;

  /**
   * The mapped logical chunks of `t` from `lo` on, ascending, as a lazy sequence: the caller takes
   * what it needs and stops (a page of changed-block metadata). Empty subtrees are never entered.
   * The walk reads the tree as it is when each step runs: take a page in one synchronous stretch.
   */
  *mappedFrom(t: Table, lo: number): Generator<number> {
    if (!t.root) return;
    // An explicit stack (no recursive generators): one resumption per chunk yielded.
    const stack: { node: TreeNode; h: number; base: number; i: number }[] = [];
    const push = (node: TreeNode, h: number, base: number): void => {
      this.nodesVisited++;
      const width = h === 0 ? 1 : span(h - 1);
      stack.push({ node, h, base, i: Math.max(0, Math.floor((lo - base) / width)) });
    };
    if (lo >= span(t.levels)) return;
    push(t.root, t.levels, 0);
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      if (top.i >= FANOUT) {
        stack.pop();
        continue;
      }
      const i = top.i++;
      if (top.node.isLeaf) {
        if (top.node.slots[i] !== 0) yield top.base + i;
        continue;
      }
      const child = top.node.children[i];
      if (child) push(child, top.h - 1, top.base + i * span(top.h - 1));
    }
  }

  /**
   * The logical chunks from `lo` on whose mapping differs between `a` and `b`, ascending, as a
   * lazy sequence (diff() with a start and an early stop). Subtrees the two tables share are
   * skipped without being entered, so the cost follows what changed, not the size.
   */
  *diffFrom(a: Table, b: Table, lo: number): Generator<number> {
    const levels = Math.max(a.levels, b.levels);
    if (lo >= span(levels)) return;
    // A root lower than `levels` stands for child 0 of virtual inner nodes above it.
    const childOf = (node: TreeNode | null, nodeH: number, h: number, i: number): TreeNode | null => {
      if (!node) return null;
      if (nodeH < h) return i === 0 ? node : null;
      return (node as Inner).children[i] ?? null;
    };
    interface Frame {
      x: TreeNode | null;
      hx: number;
      y: TreeNode | null;
      hy: number;
      h: number;
      base: number;
      i: number;
    }
    const stack: Frame[] = [];
    const push = (f: Omit<Frame, "i">): void => {
      if (f.x === f.y && (f.hx === f.hy || !f.x)) return; // shared (or both empty): nothing differs
      this.nodesVisited++;
      const width = f.h === 0 ? 1 : span(f.h - 1);
      stack.push({ ...f, i: Math.max(0, Math.floor((lo - f.base) / width)) });
    };
    push({ x: a.root, hx: a.levels, y: b.root, hy: b.levels, h: levels, base: 0 });
    while (stack.length > 0) {
      const f = stack[stack.length - 1]!;
      if (f.i >= FANOUT) {
        stack.pop();
        continue;
      }
      const i = f.i++;
      if (f.h === 0) {
        const xv = f.x ? (f.x as Leaf).slots[i]! : 0;
        const yv = f.y ? (f.y as Leaf).slots[i]! : 0;
        if (xv !== yv) yield f.base + i;
        continue;
      }
      const cx = childOf(f.x, f.hx, f.h, i);
      const cy = childOf(f.y, f.hy, f.h, i);
      if (cx || cy) {
        push({
          x: cx,
          hx: Math.min(f.hx, f.h - 1),
          y: cy,
          hy: Math.min(f.hy, f.h - 1),
          h: f.h - 1,
          base: f.base + i * span(f.h - 1),
        });
      }
    }
  }

  /** Returns `node` if only one parent holds it, else a private copy (the shadow). */
  private own<T extends TreeNode>(node: T, seq: number): T {
    if (node.rc === 1) return node;
    let copy: TreeNode;
    if (node.isLeaf) {
      copy = this.newLeaf(new Uint32Array(node.slots));
      for (const v of node.slots) if (v !== 0) this.space.ref(v - 1);
    } else {
      copy = this.newInner(node.children.slice());
      for (const child of node.children) if (child) child.rc++;
    }
    node.rc--;
    if (node.rc === 1) node.unsharedAt = seq;
    return copy as T;
  }

  private releaseNode(node: TreeNode, seq: number): void {
    node.rc--;
    if (node.rc === 1) {
      node.unsharedAt = seq;
      return;
    }
    if (node.rc > 0) return;
    if (node.isLeaf) {
      this.liveLeaves--;
      for (const v of node.slots) if (v !== 0) this.space.release(v - 1, seq);
    } else {
      this.liveInners--;
      for (const child of node.children) if (child) this.releaseNode(child, seq);
    }
  }

  newLeaf(slots?: Uint32Array): Leaf {
    this.liveLeaves++;
    return new Leaf(slots);
  }

  newInner(children?: (TreeNode | null)[]): Inner {
    this.liveInners++;
    return new Inner(children);
  }
}
