import type { NbdCommandName, NbdErrnoName } from "./constants.js";
import type {
  NbdConnectionClosedEvent,
  NbdConnectionEvent,
  NbdExportEvent,
  NbdObserver,
  NbdProtocolErrorEvent,
  NbdProtocolErrorKind,
  NbdRequestCompletedEvent,
  NbdRequestEvent,
} from "./observer.js";

/** Point-in-time counters of a server, the pull-side twin of NbdObserver. */
export interface NbdStats {
  exports: number;
  connections: number;
  inFlightRequests: number;
  requests: Partial<Record<NbdCommandName, number>>;
  requestErrors: Partial<Record<NbdErrnoName, number>>;
  protocolErrors: Partial<Record<NbdProtocolErrorKind, number>>;
  bytesRead: number;
  bytesWritten: number;
}

/** An NbdObserver that keeps the counters behind NbdServer.stats(). */
export class StatsCollector implements NbdObserver {
  private exports = 0;
  private connections = 0;
  private inFlight = 0;
  private readonly requests: Partial<Record<NbdCommandName, number>> = {};
  private readonly requestErrors: Partial<Record<NbdErrnoName, number>> = {};
  private readonly protocolErrors: Partial<Record<NbdProtocolErrorKind, number>> = {};
  private bytesRead = 0;
  private bytesWritten = 0;

  exportStarted(_event: NbdExportEvent): void {
    this.exports += 1;
  }

  exportStopped(_event: NbdExportEvent): void {
    this.exports -= 1;
  }

  connectionOpened(_event: NbdConnectionEvent): void {
    this.connections += 1;
  }

  connectionClosed(_event: NbdConnectionClosedEvent): void {
    this.connections -= 1;
  }

  requestStarted(event: NbdRequestEvent): void {
    this.inFlight += 1;
    this.requests[event.command] = (this.requests[event.command] ?? 0) + 1;
  }

  requestCompleted(event: NbdRequestCompletedEvent): void {
    this.inFlight -= 1;
    if (event.error !== null) {
      this.requestErrors[event.error] = (this.requestErrors[event.error] ?? 0) + 1;
    } else if (event.command === "read") {
      this.bytesRead += event.bytes;
    } else if (event.command === "write") {
      this.bytesWritten += event.bytes;
    }
  }

  protocolError(event: NbdProtocolErrorEvent): void {
    this.protocolErrors[event.kind] = (this.protocolErrors[event.kind] ?? 0) + 1;
  }

  snapshot(): NbdStats {
    return {
      exports: this.exports,
      connections: this.connections,
      inFlightRequests: this.inFlight,
      requests: { ...this.requests },
      requestErrors: { ...this.requestErrors },
      protocolErrors: { ...this.protocolErrors },
      bytesRead: this.bytesRead,
      bytesWritten: this.bytesWritten,
    };
  }
}
