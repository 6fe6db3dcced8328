import { invalidArgument } from "./request-errors.js";
import { StatusError } from "../errors/index.js";

/**
 * Paging of ListVolumes and ListSnapshots. Entries are listed node by node, each in creation
 * order (the engine's increasing id); a token names the last node and id returned, so deletions between pages never make a
 * listing skip or repeat an entry that stays.
 *
 * CSI spec, ListVolumes/ListSnapshots errors: "Invalid starting_token | 10 ABORTED". A token we
 * could not have issued (malformed, from the other listing, or past every id handed out) is
 * invalid; the CO restarts the listing.
 */
export type ListingKind = "volumes" | "snapshots";
const PREFIX: Record<ListingKind, string> = { volumes: "v", snapshots: "s" };

/**
 * Where a page ends: the node, then the engine id on that node. Listings go node by node in
 * node id order (one node in local mode), each node in creation order.
 */
export interface PageCursor {
  nodeId: string;
  id: number;
}

export function encodePageToken(kind: ListingKind, last: PageCursor): string {
  return `${PREFIX[kind]}${last.id}@${last.nodeId}`;
}

/**
 * The cursor after which the page starts (undefined: from the beginning). watermarks: per node
 * listed, the engine's idWatermark; a token for a node no longer listed is invalid as well.
 */
export function decodePageToken(
  kind: ListingKind,
  token: string,
  watermarks: ReadonlyMap<string, number>,
): PageCursor | undefined {
  if (token === "") return undefined;
  const match = /^([vs])(\d{1,15})@([A-Za-z0-9._-]{1,63})$/.exec(token);
  const id = match ? Number(match[2]) : NaN;
  const nodeId = match?.[3] ?? "";
  const watermark = watermarks.get(nodeId);
  if (
    !match ||
    match[1] !== PREFIX[kind] ||
    !Number.isSafeInteger(id) ||
    watermark === undefined ||
    id >= watermark
  ) {
    throw new StatusError(
      "ABORTED",
      `starting_token ${JSON.stringify(token.slice(0, 64))} is not a next_token this plugin returned for List${kind === "volumes" ? "Volumes" : "Snapshots"}; restart the listing without starting_token`,
    );
  }
  return { nodeId, id };
}

export function validateMaxEntries(maxEntries: number): number {
  // CSI spec: "The value of this field MUST NOT be negative."
  if (!Number.isInteger(maxEntries) || maxEntries < 0) {
    throw invalidArgument(`max_entries must not be negative (it is ${maxEntries})`);
  }
  return maxEntries;
}

/** Listing order: node id, then engine id (creation order on the node). */
export function compareCursors(a: PageCursor, b: PageCursor): number {
  if (a.nodeId !== b.nodeId) return a.nodeId < b.nodeId ? -1 : 1;
  return a.id - b.id;
}

/** One page of items sorted with compareCursors. */
export function paginate<T extends PageCursor>(
  kind: ListingKind,
  sorted: readonly T[],
  after: PageCursor | undefined,
  maxEntries: number,
): { page: T[]; nextToken: string } {
  const rest = after ? sorted.filter((item) => compareCursors(item, after) > 0) : [...sorted];
  if (maxEntries === 0 || rest.length <= maxEntries) return { page: rest, nextToken: "" };
  const page = rest.slice(0, maxEntries);
  return { page, nextToken: encodePageToken(kind, page[page.length - 1]!) };
}
