import { BASE_ALLOCATION_CONTEXT } from "./constants.js";

/**
 * Query matching for the metadata contexts this server offers: only `base:allocation`
 * (proto.md "Metadata querying" and "The `base:` metadata namespace").
 */

/** The id we hand out for base:allocation; any value is allowed, ids are per-connection. */
export const BASE_ALLOCATION_CONTEXT_ID = 1;

export const SUPPORTED_META_CONTEXTS: readonly string[] = [BASE_ALLOCATION_CONTEXT];

/**
 * proto.md: during LIST, no queries means "everything" and `base:` is a wildcard for the base
 * namespace; during SET, no queries selects nothing and `base:` MUST be ignored. Unknown
 * namespaces and leaf names are ignored rather than reported as errors.
 */
export function matchMetaContexts(queries: readonly string[], mode: "list" | "set"): string[] {
  if (queries.length === 0) return mode === "list" ? [...SUPPORTED_META_CONTEXTS] : [];
  const matched = new Set<string>();
  for (const query of queries) {
    if (query === BASE_ALLOCATION_CONTEXT || (mode === "list" && query === "base:")) {
      matched.add(BASE_ALLOCATION_CONTEXT);
    }
  }
  return [...matched];
}
