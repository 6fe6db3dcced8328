import { parseArgs } from "node:util";
import type { CsiSnapshotOutput } from "../pkg/csi/index.js";
import { UsageError, formatByteSize } from "./byte-size.js";
import type { CliContext } from "./cli-context.js";
import { DEFAULT_ENDPOINT, withConnection, OPERATOR_OPTIONS } from "./operator-connection.js";
import { printFields, printJson, printTable } from "./table-output.js";

export const SNAPSHOT_USAGE = `snapblock snapshot <verb> [options]

  create VOLUME_ID NAME          instant, point-in-time snapshot of a volume
  list [--volume VOLUME_ID]      all snapshots (or those of one volume)
  get SNAPSHOT_ID
  delete SNAPSHOT_ID             whatever was restored or cloned from it stays intact
  diff BASE_ID TARGET_ID         byte ranges where TARGET differs from BASE (an earlier
                                 snapshot of the same volume), with totals
  allocated SNAPSHOT_ID          byte ranges of a snapshot that hold data, with totals

  --endpoint    CSI socket (default ${DEFAULT_ENDPOINT}, or $SNAPBLOCK_ENDPOINT)
  --json        machine-readable output
`;

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
  switch (verb) {
    case "create": {
      const { values, positionals } = parseArgs({
        args: ctx.args,
        allowPositionals: true,
        options: OPERATOR_OPTIONS,
      });
      if (values.help) return help(ctx);
      if (positionals.length !== 2) throw new UsageError("snapshot create VOLUME_ID NAME");
      return withConnection(ctx, values.endpoint, async (conn, out) => {
        const res = await conn.controller<SnapshotResponse>("CreateSnapshot", {
          sourceVolumeId: positionals[0],
          name: positionals[1],
        });
        if (out.json) printJson(out, res.snapshot);
        else printFields(out, snapshotFields(res.snapshot));
        return 0;
      });
    }
    case "list": {
      const { values } = parseArgs({
        args: ctx.args,
        options: { ...OPERATOR_OPTIONS, volume: { type: "string" } },
      });
      if (values.help) return help(ctx);
      return withConnection(ctx, values.endpoint, async (conn, out) => {
        const entries: SnapshotResponse[] = [];
        let startingToken = "";
        do {
          const page = await conn.controller<ListSnapshotsResponse>("ListSnapshots", {
            maxEntries: 500,
            startingToken,
            sourceVolumeId: values.volume ?? "",
          });
          entries.push(...page.entries);
          startingToken = page.nextToken;
        } while (startingToken !== "");
        if (out.json)
          printJson(
            out,
            entries.map((e) => e.snapshot),
          );
        else
          printTable(
            out,
            ["SNAPSHOT ID", "SOURCE VOLUME", "SIZE", "CREATED", "READY"],
            entries.map(({ snapshot: s }) => [
              s.snapshotId,
              s.sourceVolumeId,
              formatByteSize(s.sizeBytes),
              created(s),
              String(s.readyToUse),
            ]),
          );
        return 0;
      });
    }
    case "get": {
      const { values, positionals } = parseArgs({
        args: ctx.args,
        allowPositionals: true,
        options: OPERATOR_OPTIONS,
      });
      if (values.help) return help(ctx);
      if (positionals.length !== 1) throw new UsageError("snapshot get SNAPSHOT_ID");
      return withConnection(ctx, values.endpoint, async (conn, out) => {
        // GetSnapshot (CSI v1.11+): a snapshot that does not exist is NOT_FOUND, reported as such.
        const { snapshot: found } = await conn.controller<SnapshotResponse>("GetSnapshot", {
          snapshotId: positionals[0],
        });
        if (out.json) printJson(out, found);
        else printFields(out, snapshotFields(found));
        return 0;
      });
    }
    case "delete": {
      const { values, positionals } = parseArgs({
        args: ctx.args,
        allowPositionals: true,
        options: OPERATOR_OPTIONS,
      });
      if (values.help) return help(ctx);
      if (positionals.length !== 1) throw new UsageError("snapshot delete SNAPSHOT_ID");
      return withConnection(ctx, values.endpoint, async (conn, out) => {
        await conn.controller("DeleteSnapshot", { snapshotId: positionals[0] });
        if (out.json) printJson(out, { deleted: positionals[0] });
        else out.write(`deleted snapshot ${positionals[0]}\n`);
        return 0;
      });
    }
    case "diff":
    case "allocated": {
      const { values, positionals } = parseArgs({
        args: ctx.args,
        allowPositionals: true,
        options: OPERATOR_OPTIONS,
      });
      if (values.help) return help(ctx);
      const diff = verb === "diff";
      if (positionals.length !== (diff ? 2 : 1)) {
        throw new UsageError(diff ? "snapshot diff BASE_ID TARGET_ID" : "snapshot allocated SNAPSHOT_ID");
      }
      return withConnection(ctx, values.endpoint, async (conn, out) => {
        // The CSI SnapshotMetadata service, as a backup tool reads it (docs/csi.md).
        const messages = diff
          ? conn.snapshotMetadata<MetadataResponse>("GetMetadataDelta", {
              baseSnapshotId: positionals[0],
              targetSnapshotId: positionals[1],
              startingOffset: 0,
              maxResults: 0,
            })
          : conn.snapshotMetadata<MetadataResponse>("GetMetadataAllocated", {
              snapshotId: positionals[0],
              startingOffset: 0,
              maxResults: 0,
            });
        const ranges: Array<{ offset: number; length: number }> = [];
        let capacity = 0;
        for await (const m of messages) {
          capacity = m.volumeCapacityBytes;
          for (const b of m.blockMetadata) ranges.push({ offset: b.byteOffset, length: b.sizeBytes });
        }
        const totalBytes = ranges.reduce((n, r) => n + r.length, 0);
        if (out.json) {
          printJson(out, {
            ...(diff
              ? { baseSnapshotId: positionals[0], targetSnapshotId: positionals[1] }
              : { snapshotId: positionals[0] }),
            volumeCapacityBytes: capacity,
            rangeCount: ranges.length,
            totalBytes,
            ranges,
          });
          return 0;
        }
        printTable(
          out,
          ["OFFSET", "LENGTH", "SIZE"],
          ranges.map((r) => [String(r.offset), String(r.length), formatByteSize(r.length)]),
        );
        const share = capacity > 0 ? ` (${((100 * totalBytes) / capacity).toFixed(1)}%)` : "";
        out.write(
          `${ranges.length} range${ranges.length === 1 ? "" : "s"}, ${formatByteSize(totalBytes)} ${diff ? "changed" : "allocated"} of ${formatByteSize(capacity)}${share}\n`,
        );
        return 0;
      });
    }
    case undefined:
    case "help":
    case "--help":
    case "-h":
      ctx.stdout(SNAPSHOT_USAGE);
      return verb === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown snapshot verb ${JSON.stringify(verb)}\n\n${SNAPSHOT_USAGE}`);
  }
}

function help(ctx: CliContext): number {
  ctx.stdout(SNAPSHOT_USAGE);
  return 0;
}

function created(s: CsiSnapshotOutput): string {
  const seconds = s.creationTime?.seconds ?? 0;
  return new Date(seconds * 1000 + Math.floor((s.creationTime?.nanos ?? 0) / 1e6)).toISOString();
}

function snapshotFields(s: CsiSnapshotOutput): Array<[string, string]> {
  return [
    ["snapshot id", s.snapshotId],
    ["source volume", s.sourceVolumeId],
    ["size", `${formatByteSize(s.sizeBytes)} (${s.sizeBytes} bytes)`],
    ["created", created(s)],
    ["ready to use", String(s.readyToUse)],
  ];
}
