import type { Logger } from "../pkg/log/index.js";

/**
 * Waits for SIGINT/SIGTERM, then runs stop once; a second signal exits at once. Resolves with
 * the exit code: 0, or 1 when stopping failed (logged).
 */
export function untilSignal(logger: Logger, stop: () => Promise<void>): Promise<number> {
  return new Promise<number>((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        logger.warn("second signal: exiting without waiting", { signal });
        process.exit(1);
      }
      stopping = true;
      logger.info("shutting down", { signal });
      void stop().then(
        () => {
          logger.info("stopped", { exitCode: 0 });
          resolve(0);
        },
        (err: unknown) => {
          logger.error("shutdown failed", { err });
          resolve(1);
        },
      );
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
  });
}
