import { formatByteSize } from "../pkg/byte-size/index.js";
import { DEFAULT_VOLUME_BYTES } from "../pkg/csi/index.js";
import { OPERATOR_FLAGS } from "./operator-connection.js";
import { defineVerb, groupUsage, type FlagSpec } from "./verb-spec.js";

/** The verbs of `snapblock volume`, declared once (parser, usage line and --help). */
const MODE_FLAGS = {
  fs: { type: "string", value: "ext4|xfs", help: "a filesystem volume of this type (default ext4)" },
  block: { type: "boolean", default: false, help: "a raw block volume: a block device, no filesystem" },
} as const satisfies Record<string, FlagSpec>;

const COPY_FLAGS = {
  "allow-mode-change": {
    type: "boolean",
    default: false,
    help: "let the volume be used in another mode than its source's data, and let the node format it when it holds no filesystem (its content is then lost)",
  },
  "full-copy": {
    type: "boolean",
    default: false,
    help: "copy every chunk in the background, so that the volume shares nothing with its source",
  },
  wait: { type: "boolean", default: false, help: "with --full-copy: follow the copy until it ends" },
} as const satisfies Record<string, FlagSpec>;

const SOURCE_SIZE = {
  type: "string",
  value: "SIZE",
  defaultText: "the source's size",
  help: "the volume's size, exactly (e.g. 10G; not below the source's)",
} as const satisfies FlagSpec;

export const VOLUME_VERBS = {
  create: defineVerb({
    command: "volume create",
    args: ["NAME"],
    summary: "Creates a volume, empty or with the content of a snapshot or another volume.",
    flags: {
      size: {
        type: "string",
        value: "SIZE",
        defaultText: `${formatByteSize(DEFAULT_VOLUME_BYTES)}, or the source's size`,
        help: "the volume's size, exactly (bytes or 512M, 10G, 1.5T)",
      },
      ...MODE_FLAGS,
      "from-snapshot": { type: "string", value: "ID", help: "restore this snapshot (like volume restore)" },
      "from-volume": { type: "string", value: "ID", help: "clone this volume (like volume clone)" },
      ...COPY_FLAGS,
      ...OPERATOR_FLAGS,
    },
  }),
  restore: defineVerb({
    command: "volume restore",
    args: ["SNAPSHOT_ID|VOLUME_ID@TIME", "NAME"],
    summary:
      "Creates a volume with a snapshot's content, or a volume's at TIME (its newest recovery point at or before it), at once; it keeps the source's mode.",
    flags: { size: SOURCE_SIZE, ...MODE_FLAGS, ...COPY_FLAGS, ...OPERATOR_FLAGS },
  }),
  clone: defineVerb({
    command: "volume clone",
    args: ["VOLUME_ID", "NAME"],
    summary: "Creates a volume with another volume's content, at once; it keeps that volume's mode.",
    flags: { size: SOURCE_SIZE, ...MODE_FLAGS, ...COPY_FLAGS, ...OPERATOR_FLAGS },
  }),
  list: defineVerb({
    command: "volume list",
    summary: "Lists the volumes: size, mode, state on this machine, source, condition.",
    flags: OPERATOR_FLAGS,
  }),
  get: defineVerb({
    command: "volume get",
    args: ["VOLUME_ID"],
    summary: "Shows one volume, its state on this machine and its background copy.",
    flags: {
      wait: { type: "boolean", default: false, help: "follow its background copy until it ends" },
      ...OPERATOR_FLAGS,
    },
  }),
  expand: defineVerb({
    command: "volume expand",
    args: ["VOLUME_ID"],
    summary: "Grows a volume to a size (volumes never shrink); a staged filesystem grows with it.",
    flags: {
      size: { type: "string", value: "SIZE", help: "the new size, exactly (required)" },
      ...OPERATOR_FLAGS,
    },
  }),
  delete: defineVerb({
    command: "volume delete",
    args: ["VOLUME_ID"],
    summary:
      "Deletes a volume and its recovery points; its snapshots, pinned points and what was restored from them stay.",
    flags: OPERATOR_FLAGS,
  }),
  attach: defineVerb({
    command: "volume attach",
    args: ["VOLUME_ID"],
    summary:
      "Stages a volume on this machine: a filesystem volume is mounted, a raw block volume becomes a block device.",
    flags: {
      mount: { type: "string", value: "DIR", help: "also mount the filesystem at DIR" },
      ...OPERATOR_FLAGS,
    },
  }),
  detach: defineVerb({
    command: "volume detach",
    args: ["VOLUME_ID"],
    summary: "Undoes volume attach.",
    flags: OPERATOR_FLAGS,
  }),
  export: defineVerb({
    command: "volume export",
    args: ["VOLUME_ID"],
    summary: "Serves a volume over NBD and prints its NBD URI (for nbdinfo, nbdcopy, qemu-img, nbdfuse).",
    flags: {
      "read-only": { type: "boolean", default: false, help: "serve it read-only" },
      ...OPERATOR_FLAGS,
    },
  }),
  protect: defineVerb({
    command: "volume protect",
    args: ["VOLUME_ID"],
    summary: "Sets a volume's protection policy: recovery points as often as every second, thinned.",
    flags: {
      policy: {
        type: "string",
        value: "POLICY",
        help: 'the policy, e.g. "1s for 10m, 1m for 1h, 1h for 1d, 1d for 7d", or off (required)',
      },
      ...OPERATOR_FLAGS,
    },
  }),
  points: defineVerb({
    command: "volume points",
    args: ["VOLUME_ID"],
    summary: "Lists a volume's recovery points: time, id, what deleting each would give back.",
    flags: {
      at: { type: "string", value: "TIME", help: "only the point a restore at TIME would use (RFC 3339)" },
      kubernetes: {
        type: "boolean",
        default: false,
        help: "with --at: pin that point (its policy no longer thins it) and print a VolumeSnapshotContent and VolumeSnapshot for it (kubectl apply -f -)",
      },
      namespace: {
        type: "string",
        value: "NS",
        default: "default",
        help: "with --kubernetes: the VolumeSnapshot's namespace",
      },
      name: {
        type: "string",
        value: "NAME",
        defaultText: "point-<volume>-<time>",
        help: "with --kubernetes: the VolumeSnapshot's name",
      },
      ...OPERATOR_FLAGS,
    },
  }),
  unpin: defineVerb({
    command: "volume unpin",
    args: ["VOLUME_ID@TIME|POINT_ID"],
    summary:
      "Hands a recovery point pinned by points --kubernetes back to its policy, which may then thin it.",
    flags: OPERATOR_FLAGS,
  }),
  unexport: defineVerb({
    command: "volume unexport",
    args: ["VOLUME_ID"],
    summary: "Stops serving a volume over NBD.",
    flags: OPERATOR_FLAGS,
  }),
} as const;

export type VolumeVerb = keyof typeof VOLUME_VERBS;

/** "snapblock volume <verb>": one line per verb. */
export const VOLUME_USAGE = groupUsage("volume", VOLUME_VERBS);
