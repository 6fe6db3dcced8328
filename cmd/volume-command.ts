import { parseArgs } from "node:util";
import { status } from "@grpc/grpc-js";
import { describeBytes } from "../pkg/byte-size/index.js";
import {
  CONTEXT_FS_TYPE,
  CONTEXT_VOLUME_MODE,
  PARAM_ALLOW_MODE_CHANGE,
  PARAM_FULL_COPY,
  capabilityMessage,
  type Capability,
  type CsiVolumeOutput,
} from "../pkg/csi/index.js";
import { formatByteSize } from "../pkg/byte-size/index.js";
import { sizeFlag } from "./size-flag.js";
import { UsageError } from "./usage-error.js";
import type { CliContext } from "./cli-context.js";
import { followCopy } from "./copy-progress.js";
import {
  DEFAULT_ENDPOINT,
  OPERATOR_OPTIONS,
  failedWith,
  withConnection,
  type OperatorConnection,
} from "./operator-connection.js";
import { printFields, printJson, printTable } from "./table-output.js";
import { attachVolume, detachVolume, exportData, unexportData, volumeStates } from "./volume-access.js";

export const VOLUME_USAGE = `snapblock volume <verb> [options]

  create NAME [--size SIZE] [--fs ext4|xfs | --block] [--from-snapshot ID | --from-volume ID] [--full-copy] [--wait]
  restore SNAPSHOT_ID NAME [--size SIZE] [--fs ext4|xfs | --block] [--full-copy] [--wait]   volume with the snapshot's content
  clone VOLUME_ID NAME [--size SIZE] [--fs ext4|xfs | --block] [--full-copy] [--wait]       volume with another volume's content
  list                                                            all volumes
  get VOLUME_ID [--wait]                                          one volume (and its background copy)
  expand VOLUME_ID --size SIZE                                    grow a volume
  delete VOLUME_ID
  attach VOLUME_ID [--mount DIR]                                  stage it on this machine: a block device, or
                                                                  its filesystem mounted (at DIR with --mount)
  detach VOLUME_ID                                                undo attach
  export VOLUME_ID [--read-only]                                  serve it over NBD; prints the NBD URI
  unexport VOLUME_ID                                              stop serving it

  --size        the volume's size, exactly (default 1G; a restore or clone: the source's size)
  --fs, --block a filesystem (ext4 by default) or a raw block device; a restore or clone keeps its
                source's mode unless told otherwise
  --allow-mode-change
                let a restore or clone be used in another mode than its source's data, and let the
                node format it when it holds no filesystem (its content is then lost)
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
interface ListSnapshotsResponse {
  entries: Array<{ snapshot: { sourceVolumeId: string } }>;
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
    case "attach":
    case "detach":
    case "export":
    case "unexport":
      return access(verb, ctx);
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
      "allow-mode-change": { type: "boolean", default: false },
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
  // The size asked is the size made: required and limit both, so that a size below a source's is
  // refused (OUT_OF_RANGE) rather than silently raised.
  const size = values.size === undefined ? undefined : sizeFlag(values.size, "--size", { sectors: true });
  const parameters: Record<string, string> = {
    ...(values["full-copy"] ? { [PARAM_FULL_COPY]: "true" } : {}),
    ...(values["allow-mode-change"] ? { [PARAM_ALLOW_MODE_CHANGE]: "true" } : {}),
  };
  return withConnection(ctx, values.endpoint, async (conn, out) => {
    const block =
      values.block || (!values.fs && source !== undefined && (await sourceMode(conn, source)) === "block");
    const capability: Capability = block
      ? { accessType: "block", mode: "SINGLE_NODE_WRITER" }
      : {
          accessType: "mount",
          mode: "SINGLE_NODE_WRITER",
          fsType: (values.fs ?? "") as "ext4",
          mountFlags: [],
        };
    const res = await conn.controller<VolumeResponse>("CreateVolume", {
      name,
      volumeCapabilities: [capabilityMessage(capability)],
      parameters,
      ...(size ? { capacityRange: { requiredBytes: size, limitBytes: size } } : {}),
      ...(source ? { volumeContentSource: source } : {}),
    });
    if (out.json) printJson(out, res.volume);
    else printFields(out, volumeFields(res.volume));
    if (values.wait && values["full-copy"] && source) {
      const state = await followCopy(conn, res.volume.volumeId, { write: ctx.stderr, tty: ctx.stderrIsTTY });
      return state === "done" ? 0 : 1;
    }
    return 0;
  });
}

/**
 * "block" when the source holds raw block data, as far as the CSI answers show: a volume's
 * context says its mode; a snapshot's is its source volume's, while that volume exists. Otherwise
 * the controller decides (it refuses a mount volume over raw block data, saying so).
 */
async function sourceMode(
  conn: OperatorConnection,
  source: { snapshot: { snapshotId: string } } | { volume: { volumeId: string } },
): Promise<"block" | "filesystem" | undefined> {
  let volumeId: string | undefined;
  if ("volume" in source) volumeId = source.volume.volumeId;
  else {
    const page = await conn.controller<ListSnapshotsResponse>("ListSnapshots", {
      snapshotId: source.snapshot.snapshotId,
    });
    volumeId = page.entries[0]?.snapshot.sourceVolumeId;
  }
  if (volumeId === undefined) return undefined;
  try {
    const res = await conn.controller<GetVolumeResponse>("ControllerGetVolume", { volumeId });
    return modeOf(res.volume) === "block" ? "block" : "filesystem";
  } catch (err) {
    if (failedWith(err, status.NOT_FOUND)) return undefined;
    throw err;
  }
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
    const states = await volumeStates(conn);
    const stateOf = (id: string) => (states ? (states.get(id)?.state ?? "detached") : "?");
    if (out.json) {
      printJson(
        out,
        entries.map((e) => ({
          ...e,
          state: states?.get(e.volume.volumeId) ?? { state: stateOf(e.volume.volumeId) },
        })),
      );
      return 0;
    }
    printTable(
      out,
      ["VOLUME ID", "SIZE", "MODE", "STATE", "SOURCE", "CONDITION"],
      entries.map((e) => {
        const broken = states?.get(e.volume.volumeId)?.state === "broken";
        return [
          e.volume.volumeId,
          formatByteSize(e.volume.capacityBytes),
          modeOf(e.volume),
          stateOf(e.volume.volumeId),
          sourceOf(e.volume),
          broken
            ? `broken: ${states?.get(e.volume.volumeId)?.reason ?? ""}`
            : (e.status?.volumeCondition?.message ?? ""),
        ];
      }),
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
    const states = await volumeStates(conn);
    const state = states?.get(volumeId);
    if (out.json) printJson(out, { ...res, state: state ?? { state: states ? "detached" : "?" } });
    else
      printFields(out, [
        ...volumeFields(res.volume),
        ["state", state ? state.state : states ? "detached" : "? (no operator service at this endpoint)"],
        ...(state?.reason ? [["why", state.reason] as [string, string]] : []),
        ...(state?.devicePath ? [["device", state.devicePath] as [string, string]] : []),
        ...(state?.mountPoints.length
          ? [["mounted at", state.mountPoints.join(" ")] as [string, string]]
          : []),
        ...(state?.export ? [["nbd uri", state.export.uri] as [string, string]] : []),
        ["condition", res.status?.volumeCondition?.message ?? ""],
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
  const bytes = sizeFlag(values.size, "--size", { sectors: true });
  return withConnection(ctx, values.endpoint, async (conn, out) => {
    // limit_bytes: the volume is to be this size; one already larger is OUT_OF_RANGE ("volumes
    // never shrink") instead of the CSI spec's quiet OK for a size already reached.
    const res = await conn.controller<{ capacityBytes: number; nodeExpansionRequired: boolean }>(
      "ControllerExpandVolume",
      { volumeId: positionals[0], capacityRange: { requiredBytes: bytes, limitBytes: bytes } },
    );
    if (out.json) printJson(out, res);
    else
      printFields(out, [
        ["size", describeBytes(res.capacityBytes)],
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
  const volumeId = positionals[0]!;
  return withConnection(ctx, values.endpoint, async (conn, out) => {
    // DeleteVolume answers OK for a volume that does not exist (CSI spec): ask first, so that
    // the message says what happened.
    const existed = await conn.controller("ControllerGetVolume", { volumeId }).then(
      () => true,
      (err: unknown) => {
        if (failedWith(err, status.NOT_FOUND)) return false;
        throw err;
      },
    );
    await conn.controller("DeleteVolume", { volumeId });
    if (out.json) printJson(out, { volumeId, deleted: existed });
    else
      out.write(
        existed ? `deleted volume ${volumeId}\n` : `volume ${volumeId} does not exist: nothing to delete\n`,
      );
    return 0;
  });
}

async function access(verb: "attach" | "detach" | "export" | "unexport", ctx: CliContext): Promise<number> {
  const { values, positionals } = parseArgs({
    args: ctx.args,
    allowPositionals: true,
    options: {
      ...OPERATOR_OPTIONS,
      ...(verb === "attach" ? { mount: { type: "string" } } : {}),
      ...(verb === "export" ? { "read-only": { type: "boolean", default: false } } : {}),
    },
  });
  if (values.help) return usage(ctx);
  if (positionals.length !== 1) throw new UsageError(`volume ${verb} VOLUME_ID`);
  const volumeId = positionals[0]!;
  return withConnection(ctx, values.endpoint, (conn, out) => {
    switch (verb) {
      case "attach": {
        const mount = (values as { mount?: string }).mount;
        return attachVolume(conn, out, { volumeId, cwd: ctx.cwd, ...(mount !== undefined ? { mount } : {}) });
      }
      case "detach":
        return detachVolume(conn, out, { volumeId });
      case "export":
        return exportData(conn, out, {
          kind: "volume",
          id: volumeId,
          readOnly: (values as { "read-only"?: boolean })["read-only"] === true,
          stderr: ctx.stderr,
        });
      case "unexport":
        return unexportData(conn, out, { kind: "volume", id: volumeId });
    }
  });
}

function usage(ctx: CliContext): number {
  ctx.stdout(VOLUME_USAGE);
  return 0;
}

function volumeFields(v: CsiVolumeOutput): Array<[string, string]> {
  const mode = modeOf(v);
  return [
    ["volume id", v.volumeId],
    ["size", describeBytes(v.capacityBytes)],
    ["mode", mode === "block" ? "block (raw block device)" : `filesystem (${mode})`],
    ["source", sourceOf(v) || "(empty volume)"],
    ["node", v.accessibleTopology.map((t) => Object.values(t.segments).join(",")).join(" ")],
  ];
}

/** "block", "ext4", "xfs" or "block,ext4" (a volume made for both), from the volume context. */
export function modeOf(v: CsiVolumeOutput): string {
  const fsType = v.volumeContext[CONTEXT_FS_TYPE];
  const modes = (v.volumeContext[CONTEXT_VOLUME_MODE] ?? "filesystem").split(",");
  return modes.map((m) => (m === "block" ? "block" : (fsType ?? "ext4"))).join(",");
}

function sourceOf(v: CsiVolumeOutput): string {
  const s = v.contentSource;
  if (s?.snapshot) return `snapshot ${s.snapshot.snapshotId}`;
  if (s?.volume) return `volume ${s.volume.volumeId}`;
  return "";
}
