/**
 * pkg/byte-size: sizes as people read and write them (binary units), for command-line flags and
 * for messages. This is the module's only entry point.
 */
export { parseByteSize, formatByteSize, describeBytes } from "./byte-size.js";
