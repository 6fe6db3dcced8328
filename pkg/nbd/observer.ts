import type { NbdCommandName, NbdErrnoName } from "./constants.js";

/** Why the server gave up on a client without a protocol-level reply (a hard disconnect). */
export type NbdProtocolErrorKind =
  | "bad_client_flags"
  | "bad_option_magic"
  | "bad_request_magic"
  | "unknown_export"
  | "option_too_long"
  | "too_many_options"
  | "handshake_timeout"
  | "connection_limit"
  | "not_ready";

export interface NbdExportEvent {
  exportName: string;
  readOnly: boolean;
}

export interface NbdConnectionEvent {
  exportName: string;
  connectionId: number;
}

export interface NbdConnectionClosedEvent extends NbdConnectionEvent {
  reason: string;
}

export interface NbdRequestEvent {
  exportName: string;
  command: NbdCommandName;
}

export interface NbdRequestCompletedEvent extends NbdRequestEvent {
  /** null on success. */
  error: NbdErrnoName | null;
  /** Payload bytes moved (read or written); 0 for other commands and failures. */
  bytes: number;
  durationMs: number;
}

export interface NbdProtocolErrorEvent {
  exportName: string;
  connectionId: number;
  kind: NbdProtocolErrorKind;
}

/**
 * Hooks for metrics (pkg/metrics turns these into Prometheus series; pkg/nbd imports no
 * Prometheus). Every hook is optional and called synchronously on the data path: keep it cheap.
 * A hook that throws is logged and otherwise ignored.
 */
export interface NbdObserver {
  exportStarted?(event: NbdExportEvent): void;
  exportStopped?(event: NbdExportEvent): void;
  connectionOpened?(event: NbdConnectionEvent): void;
  connectionClosed?(event: NbdConnectionClosedEvent): void;
  requestStarted?(event: NbdRequestEvent): void;
  requestCompleted?(event: NbdRequestCompletedEvent): void;
  protocolError?(event: NbdProtocolErrorEvent): void;
}

/**
 * Combines observers into one whose hooks are all present and never throw: a metrics bug must
 * not fail an I/O request.
 */
export function combineObservers(
  observers: readonly NbdObserver[],
  onHookError: (hook: keyof NbdObserver, err: unknown) => void,
): Required<NbdObserver> {
  const call =
    <K extends keyof NbdObserver>(hook: K) =>
    (event: Parameters<NonNullable<NbdObserver[K]>>[0]): void => {
      for (const observer of observers) {
        const fn = observer[hook] as ((e: typeof event) => void) | undefined;
        if (fn === undefined) continue;
        try {
          fn.call(observer, event);
        } catch (err) {
          onHookError(hook, err);
        }
      }
    };
  return {
    exportStarted: call("exportStarted"),
    exportStopped: call("exportStopped"),
    connectionOpened: call("connectionOpened"),
    connectionClosed: call("connectionClosed"),
    requestStarted: call("requestStarted"),
    requestCompleted: call("requestCompleted"),
    protocolError: call("protocolError"),
  };
}
