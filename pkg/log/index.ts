/**
 * pkg/log: the structured JSON logger every snapblock module writes to. This is the module's
 * only entry point.
 */
export {
  createLogger,
  silentLogger,
  LOG_LEVELS,
  type Logger,
  type LoggerOptions,
  type LogFields,
  type LogLevel,
} from "./json-logger.js";
