import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

/** Clock ticks per second of /proc/<pid>/stat's times (USER_HZ; 100 on every usual Linux). */
const TICKS = ((): number => {
  const out = execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim();
  const n = Number(out);
  if (!(n > 0)) throw new Error(`getconf CLK_TCK answered ${JSON.stringify(out)}`);
  return n;
})();

/**
 * CPU seconds (user + system, every thread of the process) that process `pid` has used so far,
 * from /proc/<pid>/stat (proc(5): fields 14 utime and 15 stime, in clock ticks). The command name
 * (field 2) may contain spaces, so fields are counted from its closing parenthesis.
 */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state): utime is field 14, stime field 15.
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) {
    throw new Error(`cannot read the CPU times of process ${pid} from /proc/${pid}/stat`);
  }
  return (utime + stime) / TICKS;
}

/**
 * Minor page faults process `pid` has taken so far (proc(5): field 10, minflt, of
 * /proc/<pid>/stat): pages the process touched that the kernel had to map (memory given back to
 * the system and taken again, page-cache pages mapped in). A count, so robust to the machine's
 * noise; on a VM that returns free pages to its host each one is also expensive.
 */
export function minorFaults(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state): minflt is field 10.
  const minflt = Number(fields[7]);
  if (!Number.isFinite(minflt)) throw new Error(`cannot read the page faults of process ${pid}`);
  return minflt;
}

/** The machine's load averages (1, 5, 15 minutes), from /proc/loadavg. */
export function loadAverage(): [number, number, number] {
  const [a, b, c] = readFileSync("/proc/loadavg", "utf8").split(" ").map(Number);
  return [a ?? 0, b ?? 0, c ?? 0];
}
