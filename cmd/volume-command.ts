import { parseArgs } from "node:util";
import {
  PARAM_FULL_COPY,
  capabilityMessage,
  type Capability,
  type CsiVolumeOutput,
} from "../pkg/csi/index.js";
import { UsageError, formatByteSize, parseByteSize } from "./byte-size.js";
import type { CliContext } from "./cli-context.js";
import { followCopy } from "./copy-progress.js";
import { DEFAULT_ENDPOINT, withConnection, OPERATOR_OPTIONS } from "./operator-connection.js";
import { printFields, printJson, printTable } from "./table-output.js";
import { SpaceFigures, poolLine } from "./space-figures.js";

export const VOLUME_USAGE = `snapblock volume <verb> [options]

  create NAME [--size SIZE] [--fs ext4|xfs | --block] [--from-snapshot ID | --from-volume ID] [--full-copy] [--wait]
  restore SNAPSHOT_ID NAME [--size SIZE] [--full-copy] [--wait]   volume with the snapshot's content
  clone VOLUME_ID NAME [--size SIZE] [--full-copy] [--wait]       volume with another volume's content
  list                                                            all volumes
  get VOLUME_ID [--wait]                                          one volume (and its background copy)
  expand VOLUME_ID --size SIZE                                    grow a volume
  delete VOLUME_ID

  --full-copy   copy every chunk in the background so the new volume shares nothing with its source
  --wait        follow the background copy with a progress bar until it ends
  --endpoint    CSI socket (default ${DEFAULT_ENDPOINT}, or $SNAPBLOCK_ENDPOINT)
  --json        machine-readable output
`;

interface VolumeResponse {
  volume: CsiVolumeOutput;
}
interface GetVolumeResponse extends VolumeResponse {
  status: { volumeCondition: { abnormal: boolean; message: string } | null } | null;
}
interface ListVolumesResponse {
  entries: GetVolumeResponse[];
  nextToken: string;
}

export async function volumeCommand(verb: string | undefined, ctx: CliContext): Promise<number> {
  switch (verb) {
    case "create":
      return create(ctx, undefined);
    case "restore":
      return create(ctx, "snapshot");
    case "clone":
      return create(ctx, "volume");
    case "list":
      return list(ctx);
    case "get":
      return get(ctx);
    case "expand":
      return expand(ctx);
    case "delete":
      return remove(ctx);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      ctx.stdout(VOLUME_USAGE);
      return verb === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown volume verb ${JSON.stringify(verb)}\n\n${VOLUME_USAGE}`);
  }
}

async function create(ctx: CliContext, from: "snapshot" | "volume" | undefined): Promise<number> {
  const { values, positionals } = parseArgs({
    args: ctx.args,
    allowPositionals: true,
    options: {
      ...OPERATOR_OPTIONS,
      size: { type: "string" },
      fs: { type: "string" },
      block: { type: "boolean", default: false },
      "from-snapshot": { type: "string" },
      "from-volume": { type: "string" },
      "full-copy": { type: "boolean", default: false },
      wait: { type: "boolean", default: false },
    },
  });
  if (values.help) return usage(ctx);
  let name: string | undefined;
  let source: { snapshot: { snapshotId: string } } | { volume: { volumeId: string } } | undefined;
  if (from) {
    if (positionals.length !== 2)
      throw new UsageError(`volume ${from === "snapshot" ? "restore SNAPSHOT_ID" : "clone VOLUME_ID"} NAME`);
    const [id, n] = positionals as [string, string];
    name = n;
    source = from === "snapshot" ? { snapshot: { snapshotId: id } } : { volume: { volumeId: id } };
  } else {
    if (positionals.length !== 1) throw new UsageError("volume create NAME [options]");
    name = positionals[0];
    if (values["from-snapshot"] && values["from-volume"])
      throw new UsageError("give --from-snapshot or --from-volume, not both");
    if (values["from-snapshot"]) source = { snapshot: { snapshotId: values["from-snapshot"] } };
    if (values["from-volume"]) source = { volume: { volumeId: values["from-volume"] } };
  }
  if (values.block && values.fs) throw new UsageError("--block volumes have no filesystem: drop --fs");
  const fsType = values.fs ?? "";
  const capability: Capability = values.block
    ? { accessType: "block", mode: "SINGLE_NODE_WRITER" }
    : { accessType: "mount", mode: "SINGLE_NODE_WRITER", fsType: fsType as "ext4", mountFlags: [] };
  const request = {
    name,
    volumeCapabilities: [capabilityMessage(capability)],
    parameters: values["full-copy"] ? { [PARAM_FULL_COPY]: "true" } : {},
    ...(values.size ? { capacityRange: { requiredBytes: parseByteSize(values.size, "--size") } } : {}),
    ...(source ? { volumeContentSource: source } : {}),
  };
  return withConnection(ctx, values.endpoint, async (conn, out) => {
    const res = await conn.controller<VolumeResponse>("CreateVolume", request);
    if (out.json) printJson(out, res.volume);
    else printFields(out, volumeFields(res.volume));
    if (values.wait && values["full-copy"] && source) {
      const state = await followCopy(conn, res.volume.volumeId, { write: ctx.stderr, tty: ctx.stderrIsTTY });
      return state === "done" ? 0 : 1;
    }
    return 0;
  });
}

async function list(ctx: CliContext): Promise<number> {
  const { values } = parseArgs({ args: ctx.args, options: OPERATOR_OPTIONS });
  if (values.help) return usage(ctx);
  return withConnection(ctx, values.endpoint, async (conn, out) => {
    const entries: GetVolumeResponse[] = [];
    let startingToken = "";
    do {
      const page = await conn.controller<ListVolumesResponse>("ListVolumes", {
        maxEntries: 500,
        startingToken,
      });
      entries.push(...page.entries);
      startingToken = page.nextToken;
    } while (startingToken !== "");
    if (out.json) {
      printJson(out, entries);
      return 0;
    }
    printTable(
      out,
      ["VOLUME ID", "SIZE", "FS", "SOURCE", "CONDITION"],
      entries.map((e) => [
        e.volume.volumeId,
        formatByteSize(e.volume.capacityBytes),
        e.volume.volumeContext["snapblock.dev/fsType"] ?? "",
        sourceOf(e.volume),
        e.status?.volumeCondition?.message ?? "",
      ]),
    );
    return 0;
  });
}

async function get(ctx: CliContext): Promise<number> {
  const { values, positionals } = parseArgs({
    args: ctx.args,
    allowPositionals: true,
    options: { ...OPERATOR_OPTIONS, wait: { type: "boolean", default: false } },
  });
  if (values.help) return usage(ctx);
  if (positionals.length !== 1) throw new UsageError("volume get VOLUME_ID");
  const volumeId = positionals[0]!;
  return withConnection(ctx, values.endpoint, async (conn, out) => {
    const res = await conn.controller<GetVolumeResponse>("ControllerGetVolume", { volumeId });
    const space = await SpaceFigures.fetch(conn);
    const figures = space?.volume(volumeId);
    const pool = space?.pool(volumeId);
    if (out.json) printJson(out, figures ? { ...res, space: { ...figures, pool: pool?.pool } } : res);
    else
      printFields(out, [
        ...volumeFields(res.volume),
        ["condition", res.status?.volumeCondition?.message ?? ""],
        ...(figures
          ? ([
              ["written", formatByteSize(figures.mappedBytes)],
              ["exclusive", `${formatByteSize(figures.exclusiveBytes)} (only this volume maps it)`],
              [
                "held by snapshots",
                `${formatByteSize(figures.snapshotOnlyBytes)} only its ${figures.snapshotCount} snapshot(s) hold (deleting them gives it back)`,
              ],
            ] as Array<[string, string]>)
          : []),
        ...(pool ? ([[`pool (node ${pool.nodeId})`, poolLine(pool.pool)]] as Array<[string, string]>) : []),
      ]);
    if (values.wait)
      return (await followCopy(conn, volumeId, { write: ctx.stderr, tty: ctx.stderrIsTTY })) === "failed"
        ? 1
        : 0;
    return 0;
  });
}

async function expand(ctx: CliContext): Promise<number> {
  const { values, positionals } = parseArgs({
    args: ctx.args,
    allowPositionals: true,
    options: { ...OPERATOR_OPTIONS, size: { type: "string" } },
  });
  if (values.help) return usage(ctx);
  if (positionals.length !== 1 || !values.size) throw new UsageError("volume expand VOLUME_ID --size SIZE");
  const requiredBytes = parseByteSize(values.size, "--size");
  return withConnection(ctx, values.endpoint, async (conn, out) => {
    const res = await conn.controller<{ capacityBytes: number; nodeExpansionRequired: boolean }>(
      "ControllerExpandVolume",
      {
        volumeId: positionals[0],
        capacityRange: { requiredBytes },
      },
    );
    if (out.json) printJson(out, res);
    else
      printFields(out, [
        ["size", formatByteSize(res.capacityBytes)],
        ["filesystem grows on next stage/expand", String(res.nodeExpansionRequired)],
      ]);
    return 0;
  });
}

async function remove(ctx: CliContext): Promise<number> {
  const { values, positionals } = parseArgs({
    args: ctx.args,
    allowPositionals: true,
    options: OPERATOR_OPTIONS,
  });
  if (values.help) return usage(ctx);
  if (positionals.length !== 1) throw new UsageError("volume delete VOLUME_ID");
  return withConnection(ctx, values.endpoint, async (conn, out) => {
    await conn.controller("DeleteVolume", { volumeId: positionals[0] });
    if (out.json) printJson(out, { deleted: positionals[0] });
    else out.write(`deleted volume ${positionals[0]}\n`);
    return 0;
  });
}

function usage(ctx: CliContext): number {
  ctx.stdout(VOLUME_USAGE);
  return 0;
}

function volumeFields(v: CsiVolumeOutput): Array<[string, string]> {
  return [
    ["volume id", v.volumeId],
    ["size", `${formatByteSize(v.capacityBytes)} (${v.capacityBytes} bytes)`],
    ["filesystem", v.volumeContext["snapblock.dev/fsType"] ?? ""],
    ["source", sourceOf(v) || "(empty volume)"],
    ["node", v.accessibleTopology.map((t) => Object.values(t.segments).join(",")).join(" ")],
  ];
}

function sourceOf(v: CsiVolumeOutput): string {
  const s = v.contentSource;
  if (s?.snapshot) return `snapshot ${s.snapshot.snapshotId}`;
  if (s?.volume) return `volume ${s.volume.volumeId}`;
  return "";
}
