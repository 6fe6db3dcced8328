import path from "node:path";
import { invalidArgument } from "./request-errors.js";

/**
 * CSI endpoints are unix sockets (kubelet and the sidecars use unix:///path/csi.sock).
 * Accepted forms: unix:///abs/path, unix:/abs/path, unix:relative/path, or a bare path;
 * relative paths are taken from `cwd`. Returns the absolute socket path.
 */
export function socketPathOf(endpoint: string, cwd: string): string {
  let p: string;
  if (endpoint.startsWith("unix://")) p = endpoint.slice("unix://".length);
  else if (endpoint.startsWith("unix:")) p = endpoint.slice("unix:".length);
  else if (/^[a-z][a-z0-9+.-]*:/i.test(endpoint)) {
    throw invalidArgument(
      `endpoint ${JSON.stringify(endpoint)} is not a unix socket (use unix:///path/csi.sock)`,
    );
  } else p = endpoint;
  if (p === "") throw invalidArgument("the endpoint names no socket path");
  return path.resolve(cwd, p);
}

/** The grpc-js address of a socket path. */
export function grpcUnixAddress(socketPath: string): string {
  return `unix:${socketPath}`;
}
