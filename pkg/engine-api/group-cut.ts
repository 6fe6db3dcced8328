import { SnapblockError } from "../errors/index.js";
import type { Logger } from "../log/index.js";
import type { EngineApi, EngineGroupMember, EngineSnapshot } from "./engine-api.js";

/** The members of a group snapshot on one node, and that node's engine. */
export interface GroupPart {
  engine: EngineApi;
  members: EngineGroupMember[];
}

/**
 * Takes a group snapshot as one consistent cut (no write acknowledged after the cut is in any
 * member, every write acknowledged before it is in all), in the same order of parts given.
 *
 * One node: one call, one commit on that node. Several nodes: new writes are held on every
 * member (each node drains its writes in flight), then each node snapshots its members under
 * its hold, then every hold is released. The cut is consistent when every hold stood from the
 * moment the last hold was taken until after the last snapshot: each node reports at release
 * whether its hold stood until then (heldThroughout), and since every release is asked after
 * every snapshot, all true means all holds overlapped every snapshot. Each hold is bounded on its
 * node (holdMs, default 2 s): a hold that could not drain, a snapshot that failed, or a hold
 * that expired fails the group (CANCELLED, the CO retries) and the snapshots taken on the other
 * nodes are deleted, so nothing is left behind.
 */
export async function snapshotGroupAcrossNodes(
  parts: readonly GroupPart[],
  o: { holdMs: number; logger?: Logger; group: string },
): Promise<EngineSnapshot[][]> {
  if (parts.length === 1) return [await parts[0]!.engine.createSnapshotGroup({ members: parts[0]!.members })];
  const started = performance.now();
  const holds = await Promise.allSettled(
    parts.map((p) => p.engine.holdWrites({ volumes: p.members.map((m) => m.volume), timeoutMs: o.holdMs })),
  );
  const release = async (): Promise<boolean[]> => {
    const outcomes = await Promise.allSettled(
      holds.map((h, i) =>
        h.status === "fulfilled"
          ? parts[i]!.engine.releaseWrites(h.value.holdId)
          : Promise.resolve({ heldThroughout: false }),
      ),
    );
    return outcomes.map((r) => r.status === "fulfilled" && r.value.heldThroughout);
  };
  const failedHold = holds.find((h): h is PromiseRejectedResult => h.status === "rejected");
  if (failedHold) {
    await release();
    throw groupFailed(o.group, "writes could not be held on every member", failedHold.reason);
  }
  const heldMs = performance.now() - started;
  const taken = await Promise.allSettled(
    parts.map((p, i) =>
      p.engine.createSnapshotGroup({
        members: p.members,
        holdId: (holds[i] as PromiseFulfilledResult<{ holdId: string }>).value.holdId,
      }),
    ),
  );
  const stood = await release();
  const totalMs = Math.round(performance.now() - started);
  const failedSnap = taken.find((t): t is PromiseRejectedResult => t.status === "rejected");
  if (!failedSnap && stood.every(Boolean)) {
    o.logger?.info("group snapshot taken across nodes", {
      group: o.group,
      nodes: parts.map((p) => p.engine.nodeId),
      drainMs: Math.round(heldMs),
      heldMs: totalMs,
    });
    return taken.map((t) => (t as PromiseFulfilledResult<EngineSnapshot[]>).value);
  }
  // Not one cut: take back what was taken.
  const left = await discard(parts, taken);
  const why = failedSnap
    ? "a node could not take its snapshots"
    : `the hold on writes did not last until every snapshot was taken (its bound is ${o.holdMs} ms; this took ${totalMs} ms)`;
  throw groupFailed(
    o.group,
    left.length === 0 ? why : `${why}; deleting ${left.join(", ")} failed too, delete them by hand`,
    failedSnap?.reason,
  );
}

/** Deletes the snapshots that were taken; returns "<node>/<name>" of those it could not delete. */
async function discard(
  parts: readonly GroupPart[],
  taken: readonly PromiseSettledResult<EngineSnapshot[]>[],
): Promise<string[]> {
  const jobs = taken.flatMap((t, i) =>
    t.status === "fulfilled" ? t.value.map((s) => ({ engine: parts[i]!.engine, name: s.name })) : [],
  );
  const outcomes = await Promise.allSettled(jobs.map((j) => j.engine.deleteSnapshot(j.name)));
  return jobs.flatMap((j, i) => (outcomes[i]!.status === "rejected" ? [`${j.engine.nodeId}/${j.name}`] : []));
}

function groupFailed(group: string, why: string, cause: unknown): SnapblockError {
  const detail = cause instanceof Error ? `: ${cause.message}` : "";
  // CANCELLED is ABORTED over gRPC: the CO retries, and nothing of this attempt is left.
  return new SnapblockError("CANCELLED", `group snapshot ${group} was not taken: ${why}${detail}`, {
    cause,
  });
}
