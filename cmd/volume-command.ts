import { status } from "@grpc/grpc-js";
import { describeBytes, formatByteSize } from "../pkg/byte-size/index.js";
import type { CsiVolumeOutput } from "../pkg/csi/index.js";
import type { CliContext } from "./cli-context.js";
import { followCopy } from "./copy-progress.js";
import { withConnection, type OperatorConnection } from "./operator-connection.js";
import { failedWith } from "./operator-error.js";
import { sizeFlag } from "./size-flag.js";
import { SpaceFigures, poolLine } from "./space-figures.js";
import {
  checkObjectName,
  kubernetesObjects,
  markPinned,
  parsePointRef,
  parseTime,
  pinForKubernetes,
  pointAt,
  protect,
  showPoints,
  unpin,
} from "./recovery-points.js";
import { printFields, printJson, printTable, type Output } from "./table-output.js";
import { UsageError } from "./usage-error.js";
import { runVerb, usageError } from "./verb-spec.js";
import { attachVolume, detachVolume, exportData, unexportData, volumeStates } from "./volume-access.js";
import { modeOf, sourceOf, volumeFields } from "./volume-fields.js";
import { createVolumeRequest, planCreate, type CreatePlan } from "./volume-request.js";
import { VOLUME_USAGE, VOLUME_VERBS, type VolumeVerb } from "./volume-verbs.js";

export { VOLUME_USAGE };

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
interface ListSnapshotsResponse {
  entries: Array<{ snapshot: { sourceVolumeId: string } }>;
}

/** `snapblock volume <verb>`: each verb parses its flags (volume-verbs.ts), then speaks CSI. */
export async function volumeCommand(verb: string | undefined, ctx: CliContext): Promise<number> {
  if (verb === undefined || verb === "help" || verb === "--help" || verb === "-h") {
    ctx.stdout(VOLUME_USAGE);
    return verb === undefined ? 2 : 0;
  }
  if (!Object.hasOwn(VOLUME_VERBS, verb)) {
    throw new UsageError(`unknown volume verb ${JSON.stringify(verb)}\n\n${VOLUME_USAGE}`);
  }
  const V = VOLUME_VERBS;
  const run = runVerb(ctx);
  const connect =
    (values: { endpoint?: string | undefined; json: boolean }) =>
    (work: (conn: OperatorConnection, out: Output) => Promise<number>) =>
      withConnection(ctx, values, work);
  const creating = (plan: CreatePlan, values: { endpoint?: string | undefined; json: boolean }) =>
    connect(values)((conn, out) => create(ctx, conn, out, plan));
  switch (verb as VolumeVerb) {
    case "create":
      return run(V.create, (values, args) => creating(planCreate(V.create, "create", values, args), values));
    case "restore":
      return run(V.restore, (values, args) => {
        const ref = parsePointRef(args[0]!);
        if (!ref) return creating(planCreate(V.restore, "restore", values, args), values);
        // VOLUME_ID@TIME: the volume's newest recovery point at or before TIME.
        return connect(values)(async (conn, out) => {
          const point = await pointAt(conn, ref.volumeId, ref.atMs);
          ctx.stderr(`restoring recovery point ${point.snapshotId} of ${point.time.toISOString()}\n`);
          return create(
            ctx,
            conn,
            out,
            planCreate(V.restore, "restore", values, [point.snapshotId, args[1]!]),
          );
        });
      });
    case "clone":
      return run(V.clone, (values, args) => creating(planCreate(V.clone, "clone", values, args), values));
    case "list":
      return run(V.list, (values) => connect(values)((conn, out) => list(conn, out)));
    case "get":
      return run(V.get, (values, [id]) =>
        connect(values)((conn, out) => get(ctx, conn, out, id!, values.wait)),
      );
    case "expand":
      return run(V.expand, (values, [id]) => {
        if (values.size === undefined) throw usageError(V.expand, "volume expand needs --size: the new size");
        const bytes = sizeFlag(values.size, "--size", { sectors: true });
        return connect(values)((conn, out) => expand(conn, out, id!, bytes));
      });
    case "delete":
      return run(V.delete, (values, [id]) => connect(values)((conn, out) => remove(conn, out, id!)));
    case "attach":
      return run(V.attach, (values, [id]) =>
        connect(values)((conn, out) =>
          attachVolume(conn, out, {
            volumeId: id!,
            cwd: ctx.cwd,
            ...(values.mount !== undefined ? { mount: values.mount } : {}),
          }),
        ),
      );
    case "detach":
      return run(V.detach, (values, [id]) =>
        connect(values)((conn, out) => detachVolume(conn, out, { volumeId: id! })),
      );
    case "export":
      return run(V.export, (values, [id]) =>
        connect(values)((conn, out) =>
          exportData(conn, out, {
            kind: "volume",
            id: id!,
            readOnly: values["read-only"],
            stderr: ctx.stderr,
          }),
        ),
      );
    case "protect":
      return run(V.protect, (values, [id]) => {
        if (values.policy === undefined)
          throw usageError(V.protect, 'volume protect needs --policy: e.g. "1s for 10m, 1m for 1h", or off');
        const policy = values.policy;
        return connect(values)((conn, out) => protect(conn, out, id!, policy));
      });
    case "points":
      return run(V.points, (values, [id]) => {
        if (values.kubernetes && values.at === undefined)
          throw usageError(V.points, "--kubernetes prints the objects for one point: give --at TIME too");
        const at = values.at === undefined ? undefined : parseTime(values.at, "(--at)");
        // Checked before anything is pinned.
        if (values.kubernetes && values.name !== undefined) checkObjectName(values.name);
        return connect(values)(async (conn, out) => {
          if (at === undefined) return showPoints(conn, out, id!);
          if (values.kubernetes) {
            const info = await conn.identity<{ name: string }>("GetPluginInfo", {});
            // Pinned first: a VolumeSnapshot of a point its policy could thin would lose its data.
            const point = await pinForKubernetes(conn, id!, at);
            ctx.stderr(
              `pinned recovery point ${point.snapshotId} of ${point.time.toISOString()}: its policy no longer thins it; deleting the VolumeSnapshot deletes it (snapblock volume unpin releases it)\n`,
            );
            out.write(
              kubernetesObjects({
                point,
                driver: info.name,
                namespace: values.namespace,
                ...(values.name !== undefined ? { name: values.name } : {}),
              }),
            );
            return 0;
          }
          const point = await pointAt(conn, id!, at);
          await markPinned(conn, id!, [point]);
          if (out.json) printJson(out, { ...point, time: point.time.toISOString() });
          else
            printFields(out, [
              ["time", point.time.toISOString()],
              ["point id", point.snapshotId],
              ...(point.pinned === undefined
                ? []
                : [["pinned", point.pinned ? "yes" : "no"] as [string, string]]),
            ]);
          return 0;
        });
      });
    case "unpin":
      return run(V.unpin, (values, [ref]) => connect(values)((conn, out) => unpin(conn, out, ref!)));
    case "unexport":
      return run(V.unexport, (values, [id]) =>
        connect(values)((conn, out) => unexportData(conn, out, { kind: "volume", id: id! })),
      );
  }
}

async function create(
  ctx: CliContext,
  conn: OperatorConnection,
  out: Output,
  plan: CreatePlan,
): Promise<number> {
  const mode =
    plan.mode ??
    (plan.source && (await sourceMode(conn, plan.source)) === "block"
      ? ({ kind: "block" } as const)
      : ({ kind: "filesystem", fsType: "" } as const));
  const res = await conn.controller<VolumeResponse>("CreateVolume", createVolumeRequest(plan, mode));
  if (out.json) printJson(out, res.volume);
  else {
    printFields(out, volumeFields(res.volume));
    const made = res.volume.volumeId.slice(res.volume.volumeId.indexOf("/") + 1);
    if (made !== plan.name)
      ctx.stderr(
        `note: ${JSON.stringify(plan.name)} is not usable as a volume name as it is (letters, digits, ".", "_", "-", at most 64), so the id uses a hash of it: ${res.volume.volumeId}\n`,
      );
  }
  if (plan.wait) {
    const state = await followCopy(conn, res.volume.volumeId, { write: ctx.stderr, tty: ctx.stderrIsTTY });
    return state === "done" ? 0 : 1;
  }
  return 0;
}

/**
 * "block" when the source holds raw block data: a snapshot records it (operator service), a
 * volume's context says it. When neither tells (a snapshot from before snapblock recorded it, an
 * endpoint without the operator service), the snapshot's volume, if it still exists; otherwise
 * the controller decides, and refuses a filesystem over raw data, saying so.
 */
async function sourceMode(
  conn: OperatorConnection,
  source: NonNullable<CreatePlan["source"]>,
): Promise<"block" | "filesystem" | undefined> {
  let volumeId: string | undefined;
  if ("volume" in source) volumeId = source.volume.volumeId;
  else {
    const described = await conn
      .operator("DescribeSnapshot", (c) => c.describeSnapshot(source.snapshot.snapshotId))
      .catch((err: unknown) => {
        if (failedWith(err, status.UNIMPLEMENTED) || failedWith(err, status.NOT_FOUND)) return undefined;
        throw err;
      });
    if (described?.dataMode === "block") return "block";
    if (described?.dataMode.startsWith("filesystem")) return "filesystem";
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

async function list(conn: OperatorConnection, out: Output): Promise<number> {
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
      const state = states?.get(e.volume.volumeId);
      return [
        e.volume.volumeId,
        formatByteSize(e.volume.capacityBytes),
        modeOf(e.volume),
        stateOf(e.volume.volumeId),
        sourceOf(e.volume),
        state?.state === "broken" ? `broken: ${state.reason}` : (e.status?.volumeCondition?.message ?? ""),
      ];
    }),
  );
  return 0;
}

async function get(
  ctx: CliContext,
  conn: OperatorConnection,
  out: Output,
  volumeId: string,
  wait: boolean,
): Promise<number> {
  const res = await conn.controller<GetVolumeResponse>("ControllerGetVolume", { volumeId });
  const states = await volumeStates(conn);
  const state = states?.get(volumeId);
  const space = await SpaceFigures.fetch(conn);
  const figures = space?.volume(volumeId);
  const pool = space?.pool(volumeId);
  if (out.json)
    printJson(out, {
      ...res,
      state: state ?? { state: states ? "detached" : "?" },
      ...(figures ? { space: { ...figures, pool: pool?.pool } } : {}),
    });
  else {
    const extra: Array<[string, string]> = [];
    if (state?.reason) extra.push(["why", state.reason]);
    if (state?.devicePath) extra.push(["device", state.devicePath]);
    if (state?.mountPoints.length) extra.push(["mounted at", state.mountPoints.join(" ")]);
    if (state?.export) extra.push(["nbd uri", state.export.uri]);
    printFields(out, [
      ...volumeFields(res.volume),
      ["state", state ? state.state : states ? "detached" : "? (no operator service at this endpoint)"],
      ...extra,
      ["condition", res.status?.volumeCondition?.message ?? ""],
      ...(figures
        ? ([
            ["written", formatByteSize(figures.mappedBytes)],
            ["exclusive", `${formatByteSize(figures.exclusiveBytes)} (only this volume maps it)`],
            [
              "held by snapshots",
              `${formatByteSize(figures.snapshotOnlyBytes)} only its ${figures.snapshotCount} snapshot(s) hold (deleting them gives it back)`,
            ],
            [
              "protection",
              figures.protection === ""
                ? `off${figures.pointCount > 0 ? ` (${figures.pointCount} recovery point(s) kept)` : ""}`
                : `${figures.protection} (${figures.pointCount} recovery point(s); snapblock volume points)`,
            ],
          ] as Array<[string, string]>)
        : []),
      ...(pool ? ([[`pool (node ${pool.nodeId})`, poolLine(pool.pool)]] as Array<[string, string]>) : []),
    ]);
  }
  if (wait)
    return (await followCopy(conn, volumeId, { write: ctx.stderr, tty: ctx.stderrIsTTY })) === "failed"
      ? 1
      : 0;
  return 0;
}

async function expand(
  conn: OperatorConnection,
  out: Output,
  volumeId: string,
  bytes: number,
): Promise<number> {
  // limit_bytes: the volume is to be this size; one already larger is OUT_OF_RANGE ("volumes
  // never shrink") instead of the CSI spec's quiet OK for a size already reached.
  const res = await conn.controller<{ capacityBytes: number; nodeExpansionRequired: boolean }>(
    "ControllerExpandVolume",
    { volumeId, capacityRange: { requiredBytes: bytes, limitBytes: bytes } },
  );
  if (out.json) printJson(out, res);
  else
    printFields(out, [
      ["size", describeBytes(res.capacityBytes)],
      ["filesystem grows on next stage/expand", String(res.nodeExpansionRequired)],
    ]);
  return 0;
}

async function remove(conn: OperatorConnection, out: Output, volumeId: string): Promise<number> {
  // DeleteVolume answers OK for a volume that does not exist (CSI spec): ask first, so that the
  // message says what happened.
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
}
