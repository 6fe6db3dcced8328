import { SnapblockError } from "../errors/index.js";
import type { NbdConnectionInfo } from "./connection.js";
import { ExportRegistry } from "./export-registry.js";
import { resolveLimits, type NbdLimits } from "./limits.js";
import { combineObservers, type NbdObserver } from "./observer.js";
import { ServedExport, type NbdExportInfo, type NbdExportOptions } from "./served-export.js";
import { StatsCollector, type NbdStats } from "./stats.js";
import { createLogger, type Logger } from "../log/index.js";

export interface NbdServerOptions {
  /** Structured logger; default: JSON lines on stderr, warnings and errors only. */
  logger?: Logger;
  /** Hooks for metrics; see NbdObserver. */
  observer?: NbdObserver;
  /** Overrides of DEFAULT_NBD_LIMITS. */
  limits?: Partial<NbdLimits>;
}

/**
 * The NBD server of a node: a set of exports, each a backend (a volume read-write, a snapshot
 * read-only) served on its own unix socket (or TCP address, when configured).
 */
export class NbdServer {
  private readonly logger: Logger;
  private readonly limits: NbdLimits;
  private readonly stats_ = new StatsCollector();
  private readonly observer: Required<NbdObserver>;
  private readonly registry = new ExportRegistry<ServedExport>();
  private nextConnectionId = 1;
  private shuttingDown: Promise<void> | undefined;

  constructor(options: NbdServerOptions = {}) {
    this.logger = options.logger ?? createLogger({ level: "warn", base: { component: "nbd" } });
    this.limits = resolveLimits(options.limits);
    const observers: NbdObserver[] = [this.stats_];
    if (options.observer !== undefined) observers.push(options.observer);
    this.observer = combineObservers(observers, (hook, err) =>
      this.logger.error("nbd observer hook failed", { hook, err }),
    );
  }

  /**
   * Starts serving a backend. Rejects with ALREADY_EXISTS for a name or address in use,
   * INVALID_ARGUMENT for bad options, BUSY for a socket another process listens on, and CLOSED
   * after shutdown().
   */
  async startExport(options: NbdExportOptions): Promise<NbdExportInfo> {
    if (this.shuttingDown !== undefined) throw new SnapblockError("CLOSED", "the NBD server is shut down");
    const name = options.name ?? options.backend.name;
    this.registry.reserve(name, options.listen);
    try {
      const served = await ServedExport.start(options, {
        limits: this.limits,
        logger: this.logger,
        observer: this.observer,
        nextConnectionId: () => this.nextConnectionId++,
      });
      if (this.shuttingDown !== undefined) {
        // shutdown() began while the listener was opening and did not see this export.
        await served.stop();
        throw new SnapblockError("CLOSED", "the NBD server shut down while the export was starting");
      }
      this.registry.commit(name, served);
      return served.info();
    } catch (err) {
      this.registry.release(name);
      throw err;
    }
  }

  /**
   * Stops an export cleanly (see ServedExport.stop): in-flight requests finish, connections
   * close, the backend is flushed, the socket file is removed. NOT_FOUND if there is no such export.
   */
  async stopExport(name: string): Promise<void> {
    const served = this.registry.get(name);
    if (served === undefined) throw new SnapblockError("NOT_FOUND", `no NBD export named ${name}`);
    try {
      await served.stop();
    } finally {
      this.registry.release(name);
    }
  }

  getExport(name: string): NbdExportInfo | undefined {
    return this.registry.get(name)?.info();
  }

  listExports(): NbdExportInfo[] {
    return this.registry.values().map((served) => served.info());
  }

  /** Connections of one export, or of all exports. */
  listConnections(exportName?: string): NbdConnectionInfo[] {
    const exports = exportName === undefined ? this.registry.values() : [this.registry.get(exportName)];
    return exports.flatMap((served) => served?.connectionInfo() ?? []);
  }

  stats(): NbdStats {
    return this.stats_.snapshot();
  }

  /** Stops every export (concurrently) and refuses new ones. Rejects if any final flush failed. */
  shutdown(): Promise<void> {
    this.shuttingDown ??= this.stopAll();
    return this.shuttingDown;
  }

  private async stopAll(): Promise<void> {
    const results = await Promise.allSettled(
      this.registry.values().map((served) => this.stopExport(served.name)),
    );
    const failures = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failures.length > 0) {
      throw new SnapblockError("IO", `${failures.length} NBD export(s) failed to stop cleanly`, {
        cause: failures.map((f) => f.reason as unknown),
      });
    }
  }
}
