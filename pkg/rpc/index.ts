/**
 * pkg/rpc: what every snapblock gRPC service shares: the one error-to-status mapping and the
 * unary-call wrapper that logs, observes and maps every call the same way. This is the module's
 * only entry point.
 */
export { toGrpcStatus, type MappedStatus } from "./grpc-status.js";
export {
  unary,
  type CallObserver,
  type CallScope,
  type UnaryHandler,
  type UnaryOptions,
} from "./unary-call.js";
export { serverStream, type StreamHandler } from "./server-stream.js";
export { PROTO_LOADER_OPTIONS, findProtoFile, loadProtoFile } from "./proto-files.js";
