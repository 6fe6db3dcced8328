export {
  findProcessesWithArgument,
  isLive,
  readProcess,
  sleep,
  stopProcess,
  type ProcOptions,
  type ProcessInfo,
} from "./process-table.js";
