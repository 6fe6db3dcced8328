import type { EventRecorder, ObjectRef } from "../cluster/index.js";
import type { KubeApi } from "./kube-api.js";
import type { Logger } from "../log/index.js";

/** Event messages are capped by the API server at 1 KiB in practice; longer ones are cut. */
const MAX_MESSAGE = 1024;

export interface KubeEventRecorderOptions {
  api: KubeApi;
  /** The reporting component, e.g. "snapblock-controller". */
  source: string;
  logger: Logger;
  now?: () => Date;
}

/**
 * Records Events without ever failing or delaying the operation they describe: an Event that
 * cannot be written is logged and dropped (the operation's own log line and status remain).
 */
export class KubeEventRecorder implements EventRecorder {
  private pending = new Set<Promise<void>>();

  constructor(private readonly o: KubeEventRecorderOptions) {}

  record(e: { involved: ObjectRef; type: "Normal" | "Warning"; reason: string; message: string }): void {
    const message = e.message.length > MAX_MESSAGE ? `${e.message.slice(0, MAX_MESSAGE - 3)}...` : e.message;
    const write = this.o.api
      .createEvent({ ...e, message, source: this.o.source, time: this.o.now?.() ?? new Date() })
      .catch((err: unknown) => {
        this.o.logger.warn("writing a Kubernetes Event failed", {
          reason: e.reason,
          object: `${e.involved.kind}/${e.involved.namespace}/${e.involved.name}`,
          err,
        });
      })
      .finally(() => this.pending.delete(write));
    this.pending.add(write);
  }

  /** Waits for the Events in flight (shutdown, tests). */
  async flush(): Promise<void> {
    await Promise.all([...this.pending]);
  }
}
