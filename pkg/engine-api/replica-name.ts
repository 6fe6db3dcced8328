import { createHash } from "node:crypto";

/**
 * The engine name of a replica of snapshot `origin` ("<node>/<engine name>") on another node:
 * one name per snapshot on every node, so a replica is found (and never made twice) by name.
 * 65 characters, longer than any name the CSI layer keeps verbatim (64) and not starting with its
 * hash prefix, so it can never collide with a volume or snapshot named by the CO.
 */
export function replicaName(origin: string): string {
  return `rep--${createHash("sha256").update(origin).digest("hex").slice(0, 60)}`;
}

/**
 * The engine name of the hidden snapshot a clone onto another node copies from ("<node>/<volume>"
 * of the new volume): a volume is cloned across nodes by snapshotting it and restoring that.
 */
export function cloneSourceName(target: string): string {
  return `clone--${createHash("sha256").update(target).digest("hex").slice(0, 58)}`;
}

/** Meta keys of replicas and snapshots that take part in replication. */
export const REPLICA_META = {
  /** On a replica: the snapshot it copies ("<node>/<engine name>"). */
  origin: "snapblock.dev/origin",
  /** On a snapshot and its replicas: how many replicas are wanted (VolumeSnapshotClass). */
  replicas: "snapblock.dev/replicas",
  /** On a snapshot and its replicas: the origin volume ("<node>/<engine name>"), for increments. */
  volume: "snapblock.dev/origin-volume",
  /** On a replica: when the snapshot it copies was taken (ms since the epoch). */
  created: "snapblock.dev/origin-created",
  /** On a replica: the engine id of the snapshot it copies, on that snapshot's node. */
  originId: "snapblock.dev/origin-id",
  /** Nodes allowed to read this snapshot (or replica): comma-separated node ids. */
  pullGrants: "snapblock.dev/pull-grants",
  /** Where a device still filling gets its content: JSON list of EngineHolder. */
  holders: "snapblock.dev/holders",
  /** On the hidden snapshot of a cross-node clone: the volume it is for ("<node>/<name>"). */
  cloneFor: "snapblock.dev/clone-for",
} as const;
