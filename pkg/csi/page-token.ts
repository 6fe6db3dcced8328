import { CsiStatusError, invalidArgument } from "./csi-status-error.js";

/**
 * Paging of ListVolumes and ListSnapshots. Entries are listed in creation order (the engine's
 * increasing id); a token names the last id returned, so deletions between pages never make a
 * listing skip or repeat an entry that stays.
 *
 * CSI spec, ListVolumes/ListSnapshots errors: "Invalid starting_token | 10 ABORTED". A token we
 * could not have issued (malformed, from the other listing, or past every id handed out) is
 * invalid; the CO restarts the listing.
 */
export type ListingKind = "volumes" | "snapshots";
const PREFIX: Record<ListingKind, string> = { volumes: "v", snapshots: "s" };

export function encodePageToken(kind: ListingKind, lastId: number): string {
  return `${PREFIX[kind]}${lastId}`;
}

/** The id after which the page starts (0: from the beginning). */
export function decodePageToken(kind: ListingKind, token: string, idWatermark: number): number {
  if (token === "") return 0;
  const match = /^([vs])(\d{1,15})$/.exec(token);
  const id = match ? Number(match[2]) : NaN;
  if (!match || match[1] !== PREFIX[kind] || !Number.isSafeInteger(id) || id >= idWatermark) {
    throw new CsiStatusError(
      "ABORTED",
      `starting_token ${JSON.stringify(token.slice(0, 64))} is not a next_token this plugin returned for List${kind === "volumes" ? "Volumes" : "Snapshots"}; restart the listing without starting_token`,
    );
  }
  return id;
}

export function validateMaxEntries(maxEntries: number): number {
  // CSI spec: "The value of this field MUST NOT be negative."
  if (!Number.isInteger(maxEntries) || maxEntries < 0) {
    throw invalidArgument(`max_entries must not be negative (it is ${maxEntries})`);
  }
  return maxEntries;
}

/** One page of items sorted by id. */
export function paginate<T extends { id: number }>(
  kind: ListingKind,
  sorted: readonly T[],
  afterId: number,
  maxEntries: number,
): { page: T[]; nextToken: string } {
  const rest = sorted.filter((item) => item.id > afterId);
  if (maxEntries === 0 || rest.length <= maxEntries) return { page: rest, nextToken: "" };
  const page = rest.slice(0, maxEntries);
  return { page, nextToken: encodePageToken(kind, page[page.length - 1]!.id) };
}
