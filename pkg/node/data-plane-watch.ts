import type { Logger } from "../log/index.js";
import type { NodeDataPlane } from "./data-plane.js";

export interface DataPlaneWatchOptions {
  dataPlane: NodeDataPlane;
  /** The node this plugin serves: a data plane of another node is refused (not ready). */
  nodeId: string;
  logger: Logger;
  /** How often to look (default 5 s). */
  intervalMs?: number;
}

/**
 * The node plugin's view of its data plane, kept current: whether it answers and is ready (the
 * CSI Probe), and which attachments are broken, each logged once when it breaks (with what to
 * do) and once when it is healthy again. The first look after a (re)start logs what the plugin
 * found attached: it holds no state of its own and carries on from there.
 */
export class DataPlaneWatch {
  private timer: NodeJS.Timeout | undefined;
  private readyNow = false;
  private answering: boolean | undefined;
  private readonly broken = new Set<string>();
  private first = true;
  private running: Promise<void> | undefined;

  constructor(private readonly options: DataPlaneWatchOptions) {}

  /** The data plane answered the last look, serves this node, and its pool is open. */
  ready(): boolean {
    return this.readyNow;
  }

  start(): Promise<void> {
    this.timer = setInterval(() => void this.look(), this.options.intervalMs ?? 5000);
    this.timer.unref();
    return this.look();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** One look (concurrent callers share it). */
  look(): Promise<void> {
    this.running ??= this.lookNow().finally(() => (this.running = undefined));
    return this.running;
  }

  private async lookNow(): Promise<void> {
    const { logger, dataPlane, nodeId } = this.options;
    let info;
    try {
      info = await dataPlane.info();
    } catch (err) {
      this.readyNow = false;
      if (this.answering !== false)
        logger.warn("the node's data plane does not answer: stage and unstage wait for it", { err });
      this.answering = false;
      return;
    }
    if (this.answering === false) logger.info("the node's data plane answers again");
    this.answering = true;
    if (info.nodeId !== nodeId) {
      if (this.readyNow || this.first)
        logger.error(
          "the data plane on the socket serves another node: check --node-id and --dataplane-socket",
          {
            dataPlaneNode: info.nodeId,
          },
        );
      this.readyNow = false;
      this.first = false;
      return;
    }
    this.readyNow = info.ready;
    const attachments = await dataPlane.attachments().catch((err: unknown) => {
      logger.warn("cannot list the data plane's attachments", { err });
      return undefined;
    });
    if (attachments === undefined) return;
    if (this.first) {
      logger.info("node plugin started: carrying on with what the data plane has attached", {
        attacher: info.attacherKind ?? `none (${info.reason})`,
        attached: attachments.length,
        broken: attachments.filter((a) => a.health === "broken").length,
      });
      this.first = false;
    }
    const seen = new Set<string>();
    for (const a of attachments) {
      if (a.health !== "broken") continue;
      seen.add(a.engineName);
      if (this.broken.has(a.engineName)) continue;
      this.broken.add(a.engineName);
      logger.warn(
        "a staged volume's block device is broken: I/O on it fails; unpublish and unstage it, then stage and publish it again (Kubernetes: restart the pods using it) and the node plugin re-attaches it",
        { volume: a.engineName, problems: a.problems },
      );
    }
    for (const name of [...this.broken]) {
      if (seen.has(name)) continue;
      this.broken.delete(name);
      logger.info("a volume's block device is no longer broken (re-attached or detached)", { volume: name });
    }
  }
}
