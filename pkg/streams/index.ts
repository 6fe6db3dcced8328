/**
 * pkg/streams: reading exact byte counts from a socket with bounded buffering (backpressure), as
 * the NBD server and the engine service's chunk channel both need. This is the module's only
 * entry point.
 */
export { StreamReader, type Allocate, type ByteReader, type StreamReaderOptions } from "./stream-reader.js";
export { OwnedMemoryReader, openReader } from "./owned-memory-reader.js";
export { BufferPool } from "./buffer-pool.js";
