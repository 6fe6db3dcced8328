import { promises as fs } from "node:fs";
import path from "node:path";
import { CONTEXT_VOLUME_MODE, type CsiVolumeOutput } from "../pkg/csi/index.js";
import type { WireVolumeState } from "../pkg/operator/index.js";
import { status } from "@grpc/grpc-js";
import { type OperatorConnection } from "./operator-connection.js";
import { OperatorError, failedWith } from "./operator-error.js";
import type { Output } from "./table-output.js";
import { printJson } from "./table-output.js";
import { UsageError } from "./usage-error.js";

/**
 * Reaching a volume's data from the command line, through the running `snapblock local`:
 * - attach/detach are the CSI Node calls a kubelet would make (NodeStage, then NodePublish for
 *   a raw block device or a --mount directory), with paths under the data directory that the
 *   operator service names (GetInfo);
 * - export/unexport ask the operator service for an NBD export, whose URI the NBD tools take.
 */
const MOUNT = { mount: { fsType: "", mountFlags: [] }, accessMode: { mode: "SINGLE_NODE_WRITER" } };
const BLOCK = { block: {}, accessMode: { mode: "SINGLE_NODE_WRITER" } };

interface Paths {
  /** NodeStage's staging path: the filesystem is mounted there. */
  staging: string;
  /** NodePublish's target for a raw block volume: its device node appears there. */
  device: string;
}

async function pathsOf(conn: OperatorConnection, volumeId: string): Promise<Paths> {
  const info = await conn.operator("GetInfo", (c) => c.getInfo());
  const dir = path.join(info.attachDir, engineNameOf(volumeId));
  return { staging: path.join(dir, "staging"), device: path.join(dir, "device") };
}

/** The engine-name part of an id ("local/data" -> "data"); ids never contain a path separator after it. */
function engineNameOf(volumeId: string): string {
  const slash = volumeId.indexOf("/");
  const name = volumeId.slice(slash + 1);
  if (slash <= 0 || name === "" || name.includes("/") || name === "." || name === "..")
    throw new UsageError(`${JSON.stringify(volumeId)} is not a volume id (NODE/NAME, e.g. local/data)`);
  return name;
}

function isBlock(volume: CsiVolumeOutput): boolean {
  return volume.volumeContext[CONTEXT_VOLUME_MODE] === "block";
}

async function stateOf(conn: OperatorConnection, volumeId: string): Promise<WireVolumeState | undefined> {
  const { states } = await conn.operator("ListVolumeStates", (c) => c.listVolumeStates());
  return states.find((s) => s.volumeId === volumeId);
}

/**
 * What the running process does with each volume (volumes not in the map are detached), or
 * undefined when the endpoint has no operator service (a cluster-mode controller).
 */
export async function volumeStates(
  conn: OperatorConnection,
): Promise<Map<string, WireVolumeState> | undefined> {
  try {
    const { states } = await conn.operator("ListVolumeStates", (c) => c.listVolumeStates());
    return new Map(states.map((s) => [s.volumeId, s]));
  } catch (err) {
    if (failedWith(err, status.UNIMPLEMENTED)) return undefined;
    throw err;
  }
}

export async function attachVolume(
  conn: OperatorConnection,
  out: Output,
  o: { volumeId: string; mount?: string; cwd: string },
): Promise<number> {
  const { volume } = await conn.controller<{ volume: CsiVolumeOutput }>("ControllerGetVolume", {
    volumeId: o.volumeId,
  });
  const block = isBlock(volume);
  if (block && o.mount !== undefined) {
    throw new UsageError(
      `volume ${o.volumeId} is a raw block volume: it has no filesystem to mount; attach it without --mount and use its device`,
    );
  }
  const paths = await pathsOf(conn, o.volumeId);
  // As a kubelet does (CSI spec: the CO creates the staging directory and a target's parent).
  await makeDirectory(paths.staging);
  const capability = block ? BLOCK : MOUNT;
  await conn.node("NodeStageVolume", {
    volumeId: o.volumeId,
    stagingTargetPath: paths.staging,
    volumeCapability: capability,
  });
  const target = block ? paths.device : o.mount === undefined ? undefined : path.resolve(o.cwd, o.mount);
  if (target !== undefined) {
    await conn.node("NodePublishVolume", {
      volumeId: o.volumeId,
      stagingTargetPath: paths.staging,
      targetPath: target,
      volumeCapability: capability,
    });
  }
  const state = await stateOf(conn, o.volumeId);
  const at = target ?? paths.staging;
  if (out.json) printJson(out, { volumeId: o.volumeId, path: at, state: state ?? null });
  else if (block)
    out.write(`attached volume ${o.volumeId}: block device at ${at} (${state?.devicePath ?? "?"})\n`);
  else out.write(`attached volume ${o.volumeId}: filesystem mounted at ${at}\n`);
  return 0;
}

async function makeDirectory(dir: string): Promise<void> {
  try {
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new OperatorError(
      `cannot create ${dir}: ${(err as Error).message} (attach runs as the user snapblock local runs as, usually root)`,
      status.PERMISSION_DENIED,
    );
  }
}

export async function detachVolume(
  conn: OperatorConnection,
  out: Output,
  o: { volumeId: string },
): Promise<number> {
  const state = await stateOf(conn, o.volumeId);
  const say = (text: string, json: object) => (out.json ? printJson(out, json) : out.write(`${text}\n`));
  if (state === undefined || state.state === "exported") {
    say(`volume ${o.volumeId} is not attached: nothing to detach`, { volumeId: o.volumeId, detached: false });
    return 0;
  }
  const paths = await pathsOf(conn, o.volumeId);
  // Only what `volume attach` made: a volume staged elsewhere (a CO, another tool) is not ours
  // to take away.
  const ours =
    state.mountPoints.length === 0 ||
    state.mountPoints.some((m) => m === paths.staging || m === paths.device);
  if (!ours) {
    throw new UsageError(
      `volume ${o.volumeId} was not attached by snapblock volume attach (it is mounted at ${state.mountPoints.join(", ")}); unstage it where it was staged`,
    );
  }
  for (const mountPoint of state.mountPoints) {
    if (mountPoint !== paths.staging)
      await conn.node("NodeUnpublishVolume", { volumeId: o.volumeId, targetPath: mountPoint });
  }
  await conn.node("NodeUnstageVolume", { volumeId: o.volumeId, stagingTargetPath: paths.staging });
  say(`detached volume ${o.volumeId}`, { volumeId: o.volumeId, detached: true });
  return 0;
}

export async function exportData(
  conn: OperatorConnection,
  out: Output,
  o: { kind: "volume" | "snapshot"; id: string; readOnly: boolean; stderr: (text: string) => void },
): Promise<number> {
  const target = o.kind === "volume" ? { volumeId: o.id } : { snapshotId: o.id };
  const started = await conn.operator("StartExport", (c) => c.startExport(target, o.readOnly));
  if (out.json) {
    printJson(out, started);
    return 0;
  }
  // The URI alone on stdout, for `$(snapblock volume export ...)`; the rest is for people.
  out.write(`${started.uri}\n`);
  o.stderr(
    `${o.kind} ${o.id} is served ${started.readOnly ? "read-only" : "read-write"} over NBD until \`snapblock ${o.kind} unexport ${o.id}\` or until snapblock local stops; e.g. nbdinfo '${started.uri}'\n`,
  );
  return 0;
}

export async function unexportData(
  conn: OperatorConnection,
  out: Output,
  o: { kind: "volume" | "snapshot"; id: string },
): Promise<number> {
  const target = o.kind === "volume" ? { volumeId: o.id } : { snapshotId: o.id };
  const { stopped } = await conn.operator("StopExport", (c) => c.stopExport(target));
  if (out.json) printJson(out, { [`${o.kind}Id`]: o.id, stopped });
  else
    out.write(stopped ? `stopped the export of ${o.kind} ${o.id}\n` : `${o.kind} ${o.id} was not exported\n`);
  return 0;
}
