import { status } from "@grpc/grpc-js";
import { describeBytes, formatByteSize } from "../pkg/byte-size/index.js";
import type { CsiSnapshotOutput } from "../pkg/csi/index.js";
import type { CliContext } from "./cli-context.js";
import { OPERATOR_FLAGS, withConnection, type OperatorConnection } from "./operator-connection.js";
import { failedWith } from "./operator-error.js";
import { isPointId } from "./recovery-points.js";
import { SpaceFigures } from "./space-figures.js";
import { printFields, printJson, printTable, type Output } from "./table-output.js";
import { UsageError } from "./usage-error.js";
import { defineVerb, groupUsage, runVerb } from "./verb-spec.js";
import { exportData, unexportData } from "./volume-access.js";

/** The verbs of `snapblock snapshot`, declared once (parser, usage line and --help). */
export const SNAPSHOT_VERBS = {
  create: defineVerb({
    command: "snapshot create",
    args: ["VOLUME_ID", "NAME"],
    summary: "Takes an instant, point-in-time snapshot of a volume.",
    flags: OPERATOR_FLAGS,
  }),
  list: defineVerb({
    command: "snapshot list",
    summary: "Lists the snapshots (of one volume with --volume); recovery points only with --points.",
    flags: {
      volume: { type: "string", value: "VOLUME_ID", help: "only this volume's snapshots" },
      points: {
        type: "boolean",
        default: false,
        help: "also list recovery points (volume points lists one volume's)",
      },
      ...OPERATOR_FLAGS,
    },
  }),
  get: defineVerb({
    command: "snapshot get",
    args: ["SNAPSHOT_ID"],
    summary: "Shows one snapshot and what it holds.",
    flags: OPERATOR_FLAGS,
  }),
  delete: defineVerb({
    command: "snapshot delete",
    args: ["SNAPSHOT_ID"],
    summary: "Deletes a snapshot; whatever was restored or cloned from it stays intact.",
    flags: OPERATOR_FLAGS,
  }),
  export: defineVerb({
    command: "snapshot export",
    args: ["SNAPSHOT_ID"],
    summary: "Serves a snapshot read-only over NBD and prints its NBD URI.",
    flags: OPERATOR_FLAGS,
  }),
  unexport: defineVerb({
    command: "snapshot unexport",
    args: ["SNAPSHOT_ID"],
    summary: "Stops serving a snapshot over NBD.",
    flags: OPERATOR_FLAGS,
  }),
  diff: defineVerb({
    command: "snapshot diff",
    args: ["BASE_ID", "TARGET_ID"],
    summary:
      "Byte ranges where TARGET differs from BASE (an earlier snapshot of the same volume), with totals.",
    flags: OPERATOR_FLAGS,
  }),
  allocated: defineVerb({
    command: "snapshot allocated",
    args: ["SNAPSHOT_ID"],
    summary: "Byte ranges of a snapshot that hold data, with totals.",
    flags: OPERATOR_FLAGS,
  }),
} as const;

export const SNAPSHOT_USAGE = groupUsage("snapshot", SNAPSHOT_VERBS);

interface SnapshotResponse {
  snapshot: CsiSnapshotOutput;
}
/** GetMetadataAllocated/GetMetadataDeltaResponse as grpc-js hands them over. */
interface MetadataResponse {
  volumeCapacityBytes: number;
  blockMetadata: Array<{ byteOffset: number; sizeBytes: number }>;
}
interface ListSnapshotsResponse {
  entries: SnapshotResponse[];
  nextToken: string;
}

export async function snapshotCommand(verb: string | undefined, ctx: CliContext): Promise<number> {
  if (verb === undefined || verb === "help" || verb === "--help" || verb === "-h") {
    ctx.stdout(SNAPSHOT_USAGE);
    return verb === undefined ? 2 : 0;
  }
  if (!Object.hasOwn(SNAPSHOT_VERBS, verb)) {
    throw new UsageError(`unknown snapshot verb ${JSON.stringify(verb)}\n\n${SNAPSHOT_USAGE}`);
  }
  const S = SNAPSHOT_VERBS;
  const run = runVerb(ctx);
  const connect =
    (values: { endpoint?: string | undefined; json: boolean }) =>
    (work: (conn: OperatorConnection, out: Output) => Promise<number>) =>
      withConnection(ctx, values, work);
  switch (verb as keyof typeof SNAPSHOT_VERBS) {
    case "create":
      return run(S.create, (values, [volumeId, name]) =>
        connect(values)(async (conn, out) => {
          const res = await conn.controller<SnapshotResponse>("CreateSnapshot", {
            sourceVolumeId: volumeId,
            name,
          });
          if (out.json) printJson(out, res.snapshot);
          else {
            printFields(out, snapshotFields(res.snapshot));
            const made = res.snapshot.snapshotId.slice(res.snapshot.snapshotId.indexOf("/") + 1);
            if (made !== name)
              ctx.stderr(
                `note: ${JSON.stringify(name)} is not usable as a snapshot name as it is (letters, digits, ".", "_", "-", at most 64), so the id uses a hash of it: ${res.snapshot.snapshotId}\n`,
              );
          }
          return 0;
        }),
      );
    case "list":
      return run(S.list, (values) =>
        connect(values)(async (conn, out) => {
          const all = await listAll(conn, values.volume ?? "");
          // Recovery points can number hundreds per volume: `volume points` is their list.
          const entries = values.points ? all : all.filter((s) => !isPointId(s.snapshotId));
          const hidden = all.length - entries.length;
          if (hidden > 0 && !out.json)
            ctx.stderr(
              `(${hidden} recovery point(s) not shown: --points, or snapblock volume points VOLUME_ID)\n`,
            );
          const space = await SpaceFigures.fetch(conn);
          if (out.json)
            printJson(
              out,
              entries.map((s) => withSpace(s, space)),
            );
          else
            printTable(
              out,
              ["SNAPSHOT ID", "SOURCE VOLUME", "SIZE", "EXCLUSIVE", "SHARED", "CREATED", "READY"],
              entries.map((s) => [
                s.snapshotId,
                s.sourceVolumeId,
                formatByteSize(s.sizeBytes),
                ...spaceCells(space, s.snapshotId),
                created(s),
                String(s.readyToUse),
              ]),
            );
          return 0;
        }),
      );
    case "get":
      return run(S.get, (values, [snapshotId]) =>
        connect(values)(async (conn, out) => {
          const found = await find(conn, snapshotId!);
          if (!found) {
            ctx.stderr(`snapshot ${snapshotId} does not exist\n`);
            return 1;
          }
          const holds = await conn
            .operator("DescribeSnapshot", (c) => c.describeSnapshot(snapshotId!))
            .then((r) => r.dataMode)
            .catch((err: unknown) => {
              if (failedWith(err, status.UNIMPLEMENTED)) return "";
              throw err;
            });
          const space = await SpaceFigures.fetch(conn);
          if (out.json) printJson(out, { ...withSpace(found, space), dataMode: holds });
          else
            printFields(out, [
              ...snapshotFields(found),
              ["holds", describeHolds(holds)],
              ...spaceFields(space, found.snapshotId),
            ]);
          return 0;
        }),
      );
    case "delete":
      return run(S.delete, (values, [snapshotId]) =>
        connect(values)(async (conn, out) => {
          // DeleteSnapshot answers OK for a snapshot that does not exist (CSI spec): ask first, so
          // that the message says what happened.
          const existed = (await find(conn, snapshotId!)) !== undefined;
          await conn.controller("DeleteSnapshot", { snapshotId });
          if (out.json) printJson(out, { snapshotId, deleted: existed });
          else
            out.write(
              existed
                ? `deleted snapshot ${snapshotId}\n`
                : `snapshot ${snapshotId} does not exist: nothing to delete\n`,
            );
          return 0;
        }),
      );
    case "export":
      return run(S.export, (values, [id]) =>
        connect(values)((conn, out) =>
          exportData(conn, out, { kind: "snapshot", id: id!, readOnly: true, stderr: ctx.stderr }),
        ),
      );
    case "unexport":
      return run(S.unexport, (values, [id]) =>
        connect(values)((conn, out) => unexportData(conn, out, { kind: "snapshot", id: id! })),
      );
    case "diff":
      return run(S.diff, (values, [baseSnapshotId, targetSnapshotId]) =>
        connect(values)((conn, out) =>
          printRanges(
            out,
            "changed",
            { baseSnapshotId, targetSnapshotId },
            conn.snapshotMetadata<MetadataResponse>("GetMetadataDelta", {
              baseSnapshotId,
              targetSnapshotId,
              startingOffset: 0,
              maxResults: 0,
            }),
          ),
        ),
      );
    case "allocated":
      return run(S.allocated, (values, [snapshotId]) =>
        connect(values)((conn, out) =>
          printRanges(
            out,
            "allocated",
            { snapshotId },
            conn.snapshotMetadata<MetadataResponse>("GetMetadataAllocated", {
              snapshotId,
              startingOffset: 0,
              maxResults: 0,
            }),
          ),
        ),
      );
  }
}

/** The ranges of a SnapshotMetadata stream (as a backup tool reads it, docs/csi.md), and totals. */
async function printRanges(
  out: Output,
  what: "changed" | "allocated",
  ids: object,
  messages: AsyncIterable<MetadataResponse>,
): Promise<number> {
  const ranges: Array<{ offset: number; length: number }> = [];
  let capacity = 0;
  for await (const m of messages) {
    capacity = m.volumeCapacityBytes;
    for (const b of m.blockMetadata) ranges.push({ offset: b.byteOffset, length: b.sizeBytes });
  }
  const totalBytes = ranges.reduce((n, r) => n + r.length, 0);
  if (out.json) {
    printJson(out, { ...ids, volumeCapacityBytes: capacity, rangeCount: ranges.length, totalBytes, ranges });
    return 0;
  }
  printTable(
    out,
    ["OFFSET", "LENGTH", "SIZE"],
    ranges.map((r) => [String(r.offset), String(r.length), formatByteSize(r.length)]),
  );
  const share = capacity > 0 ? ` (${((100 * totalBytes) / capacity).toFixed(1)}%)` : "";
  out.write(
    `${ranges.length} range${ranges.length === 1 ? "" : "s"}, ${formatByteSize(totalBytes)} ${what} of ${formatByteSize(capacity)}${share}\n`,
  );
  return 0;
}

async function listAll(conn: OperatorConnection, sourceVolumeId: string): Promise<CsiSnapshotOutput[]> {
  const entries: CsiSnapshotOutput[] = [];
  let startingToken = "";
  do {
    const page = await conn.controller<ListSnapshotsResponse>("ListSnapshots", {
      maxEntries: 500,
      startingToken,
      sourceVolumeId,
    });
    entries.push(...page.entries.map((e) => e.snapshot));
    startingToken = page.nextToken;
  } while (startingToken !== "");
  return entries;
}

/** ListSnapshots with a snapshot_id filter works with every CSI version (GetSnapshot is 1.11+). */
/**
 * GetSnapshot (CSI v1.11+), NOT_FOUND meaning "does not exist"; a plugin without it is asked with
 * ListSnapshots' snapshot_id filter, which every CSI version has.
 */
async function find(conn: OperatorConnection, snapshotId: string): Promise<CsiSnapshotOutput | undefined> {
  try {
    return (await conn.controller<{ snapshot: CsiSnapshotOutput }>("GetSnapshot", { snapshotId })).snapshot;
  } catch (err) {
    if (failedWith(err, status.NOT_FOUND)) return undefined;
    if (!failedWith(err, status.UNIMPLEMENTED)) throw err;
  }
  const page = await conn.controller<ListSnapshotsResponse>("ListSnapshots", { snapshotId });
  return page.entries[0]?.snapshot;
}

function describeHolds(dataMode: string): string {
  if (dataMode === "block") return "raw block data (restores are block volumes)";
  if (dataMode.startsWith("filesystem:"))
    return `an ${dataMode.slice("filesystem:".length)} filesystem (restores are filesystem volumes)`;
  return "(not recorded)";
}

function created(s: CsiSnapshotOutput): string {
  const seconds = s.creationTime?.seconds ?? 0;
  return new Date(seconds * 1000 + Math.floor((s.creationTime?.nanos ?? 0) / 1e6)).toISOString();
}

function snapshotFields(s: CsiSnapshotOutput): Array<[string, string]> {
  return [
    ["snapshot id", s.snapshotId],
    ["source volume", s.sourceVolumeId],
    ["size", describeBytes(s.sizeBytes)],
    ["created", created(s)],
    ["ready to use", String(s.readyToUse)],
  ];
}

/** The snapshot with its space figures (--json), when the server has them. */
function withSpace(s: CsiSnapshotOutput, space: SpaceFigures | undefined): object {
  const figures = space?.snapshot(s.snapshotId);
  return figures
    ? { ...s, space: { exclusiveBytes: figures.exclusiveBytes, sharedBytes: figures.sharedBytes } }
    : s;
}

function spaceCells(space: SpaceFigures | undefined, id: string): [string, string] {
  const f = space?.snapshot(id);
  return f ? [formatByteSize(f.exclusiveBytes), formatByteSize(f.sharedBytes)] : ["-", "-"];
}

function spaceFields(space: SpaceFigures | undefined, id: string): Array<[string, string]> {
  const f = space?.snapshot(id);
  if (!f) return [];
  return [
    ["exclusive", `${formatByteSize(f.exclusiveBytes)} (what deleting it gives back)`],
    ["shared", `${formatByteSize(f.sharedBytes)} (also held by its volume, clones or other snapshots)`],
  ];
}
