import { Gauge, type Registry } from "prom-client";

export interface AttachmentMetricsOptions {
  registry: Registry;
  /**
   * The health of every block device attached on this node, read at scrape time with an I/O probe
   * (NbdNodeVolumes.attachments), so that a device whose NBD connection died says so here as it
   * does in NodeGetVolumeStats and `snapblock volume list`.
   */
  attachments: () => Promise<ReadonlyArray<{ health: "ok" | "broken" }>>;
}

/**
 * Block devices attached on this node by health. Only a count per state: which volume is broken,
 * and why, is in the volume condition and the CLI (a per-volume label would be unbounded).
 */
export class AttachmentMetrics {
  constructor(options: AttachmentMetricsOptions) {
    new Gauge({
      name: "snapblock_node_attachments",
      help: "Block devices attached on this node, by state: ok, or broken (I/O would fail; unstage and stage again).",
      labelNames: ["state"],
      registers: [options.registry],
      async collect() {
        const all = await options.attachments();
        const broken = all.filter((a) => a.health === "broken").length;
        this.set({ state: "ok" }, all.length - broken);
        this.set({ state: "broken" }, broken);
      },
    });
  }
}
