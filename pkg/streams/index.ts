/**
 * pkg/streams: reading exact byte counts from a socket with bounded buffering (backpressure), as
 * the NBD server and the engine service's chunk channel both need. This is the module's only
 * entry point.
 */
export { StreamReader, type StreamReaderOptions } from "./stream-reader.js";
