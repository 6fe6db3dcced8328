/**
 * pkg/nbd: the NBD server that exposes volumes (read-write) and snapshots (read-only) as NBD
 * exports on unix sockets. The protocol is implemented here from NetworkBlockDevice/nbd
 * doc/proto.md; see docs/nbd.md for what is supported. This is the module's only entry point.
 */
export { NbdServer, type NbdServerOptions } from "./server.js";
export type { NbdExportInfo, NbdExportOptions, NbdExportState } from "./served-export.js";
export type { NbdConnectionInfo, NbdConnectionPhase } from "./connection.js";
export type { NbdBoundAddress, NbdListenAddress } from "./listener.js";
export type { NbdBackend, NbdBackendExtent, NbdWriteOptions } from "./backend.js";
export type { BlockSizeConstraints } from "./block-size.js";
export { DEFAULT_NBD_LIMITS, type NbdLimits } from "./limits.js";
export type {
  NbdConnectionClosedEvent,
  NbdConnectionEvent,
  NbdExportEvent,
  NbdObserver,
  NbdProtocolErrorEvent,
  NbdProtocolErrorKind,
  NbdRequestCompletedEvent,
  NbdRequestEvent,
} from "./observer.js";
export type { NbdStats } from "./stats.js";
export type { NbdCommandName, NbdErrnoName } from "./constants.js";
export { exportUri } from "./nbd-uri.js";
