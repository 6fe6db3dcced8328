import type { NbdBackendExtent } from "./backend.js";

/** A piece of a requested range with one allocation state. */
export interface CoveredExtent {
  offset: number;
  length: number;
  allocated: boolean;
}

/**
 * Turns whatever the backend's extents() returned into runs that cover [offset, offset+length)
 * exactly, in order, without overlaps, with neighbours of the same state merged. A backend bug
 * must not corrupt the reply: gaps count as allocated (that only costs the client a read of
 * zeroes, whereas a wrong "hole" would hide data), parts outside the range are cut off, and where
 * extents overlap the one starting first wins.
 */
export function coverRange(
  offset: number,
  length: number,
  extents: readonly NbdBackendExtent[],
): CoveredExtent[] {
  const end = offset + length;
  const sorted = extents
    .filter((e) => Number.isFinite(e.offset) && Number.isFinite(e.length) && e.length > 0)
    .slice()
    .sort((a, b) => a.offset - b.offset);
  const runs: CoveredExtent[] = [];
  const push = (start: number, stop: number, allocated: boolean): void => {
    if (stop <= start) return;
    const last = runs[runs.length - 1];
    if (last !== undefined && last.allocated === allocated && last.offset + last.length === start) {
      last.length += stop - start;
    } else {
      runs.push({ offset: start, length: stop - start, allocated });
    }
  };
  let position = offset;
  for (const extent of sorted) {
    if (position >= end) break;
    const start = Math.min(Math.max(extent.offset, offset), end);
    const stop = Math.min(extent.offset + extent.length, end);
    if (stop <= position) continue;
    if (start > position) push(position, start, true);
    const from = Math.max(start, position);
    push(from, stop, extent.allocated);
    position = stop;
  }
  push(position, end, true);
  return runs;
}
