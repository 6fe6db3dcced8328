/**
 * What the operator service needs from the node's data path. Today the data path runs in the
 * same process (pkg/node: NbdNodeVolumes and UserExports, wired by cmd/); when it moves into a
 * process of its own, a client of that process implements this same interface.
 */
export type ExportKind = "volume" | "snapshot";

export interface DataPathExport {
  kind: ExportKind;
  engineName: string;
  exportName: string;
  socketPath: string;
  uri: string;
  readOnly: boolean;
}

export interface DataPathAttachment {
  engineName: string;
  health: "ok" | "broken";
  /** Why it is broken, one sentence each. */
  problems: string[];
  devicePath?: string;
  /** Filesystems mounted from the device: the staging mount and its bind mounts. */
  filesystemMounts: string[];
  /** Bind mounts of the device node (a raw block volume published). */
  deviceBindMounts: string[];
}

export interface NodeDataPath {
  /** Every volume attached as a block device on this node. */
  attachments(): Promise<DataPathAttachment[]>;
  /** The NBD exports for people that are running. */
  exports(): DataPathExport[];
  startExport(o: {
    kind: ExportKind;
    engineName: string;
    readOnly: boolean;
    label: string;
  }): Promise<DataPathExport>;
  /** False when there was no such export. */
  stopExport(kind: ExportKind, engineName: string): Promise<boolean>;
}
