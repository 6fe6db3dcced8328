import { parseArgs } from "node:util";
import type { CsiSnapshotOutput } from "../pkg/csi/index.js";
import { describeBytes, formatByteSize } from "../pkg/byte-size/index.js";
import { UsageError } from "./usage-error.js";
import type { CliContext } from "./cli-context.js";
import { DEFAULT_ENDPOINT, withConnection, OPERATOR_OPTIONS } from "./operator-connection.js";
import { printFields, printJson, printTable } from "./table-output.js";
import { exportData, unexportData } from "./volume-access.js";

export const SNAPSHOT_USAGE = `snapblock snapshot <verb> [options]

  create VOLUME_ID NAME          instant, point-in-time snapshot of a volume
  list [--volume VOLUME_ID]      all snapshots (or those of one volume)
  get SNAPSHOT_ID
  delete SNAPSHOT_ID             whatever was restored or cloned from it stays intact
  export SNAPSHOT_ID             serve it read-only over NBD; prints the NBD URI
  unexport SNAPSHOT_ID           stop serving it

  --endpoint    CSI socket (default ${DEFAULT_ENDPOINT}, or $SNAPBLOCK_ENDPOINT)
  --json        machine-readable output
`;

interface SnapshotResponse {
  snapshot: CsiSnapshotOutput;
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
        // ListSnapshots with a snapshot_id filter works with every CSI version (GetSnapshot is 1.11+).
        const page = await conn.controller<ListSnapshotsResponse>("ListSnapshots", {
          snapshotId: positionals[0],
        });
        const found = page.entries[0]?.snapshot;
        if (!found) {
          ctx.stderr(`snapshot ${positionals[0]} does not exist\n`);
          return 1;
        }
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
      const snapshotId = positionals[0]!;
      return withConnection(ctx, values.endpoint, async (conn, out) => {
        // DeleteSnapshot answers OK for a snapshot that does not exist (CSI spec): ask first, so
        // that the message says what happened.
        const page = await conn.controller<ListSnapshotsResponse>("ListSnapshots", { snapshotId });
        const existed = page.entries.length > 0;
        await conn.controller("DeleteSnapshot", { snapshotId });
        if (out.json) printJson(out, { snapshotId, deleted: existed });
        else
          out.write(
            existed
              ? `deleted snapshot ${snapshotId}\n`
              : `snapshot ${snapshotId} does not exist: nothing to delete\n`,
          );
        return 0;
      });
    }
    case "export":
    case "unexport": {
      const { values, positionals } = parseArgs({
        args: ctx.args,
        allowPositionals: true,
        options: OPERATOR_OPTIONS,
      });
      if (values.help) return help(ctx);
      if (positionals.length !== 1) throw new UsageError(`snapshot ${verb} SNAPSHOT_ID`);
      const id = positionals[0]!;
      return withConnection(ctx, values.endpoint, (conn, out) =>
        verb === "export"
          ? exportData(conn, out, { kind: "snapshot", id, readOnly: true, stderr: ctx.stderr })
          : unexportData(conn, out, { kind: "snapshot", id }),
      );
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
    ["size", describeBytes(s.sizeBytes)],
    ["created", created(s)],
    ["ready to use", String(s.readyToUse)],
  ];
}
