/**
 * CPU per I/O (`npm run bench:nbd-cpu`, also the fourth part of `npm run bench:nbd`): the server
 * process's CPU time (user + system, all threads, from /proc) per 4 KiB random I/O and per MiB of
 * sequential I/O, snapblock beside qemu-nbd and nbdkit in both cache modes, through fio's nbd
 * engine on a unix socket. Throughput on this shared 2-vCPU machine moves with its neighbours; the
 * CPU a server spends per request moves much less, and says whether a gap is ours. The target
 * "raw" (fio's libaio with O_DIRECT on a filled image file, no server) is the physical limit the
 * throughput is also compared with, in the same interleaved rounds.
 *
 * Every server serves its own preallocated, fully written 1 GiB image (snapblock: a volume written
 * through, as bench/nbd-server.ts does), all running at once and idle between runs, so only the
 * measured server works during a run. Rounds are interleaved (the target order rotates each round)
 * and the table reports medians. Env: BENCH_DIR, SIZE_MIB (1024), RUNTIME (s, 4), ROUNDS (3),
 * TARGETS (comma list, default all), WORKLOADS (comma list of the names below, default all),
 * CLIENT (see below), BASELINE (the path of another checkout with its node_modules: its build
 * runs as the targets "baseline", "baseline-hybrid" and "baseline-metrics"). Needs fio, qemu-nbd,
 * nbdkit. snapblock's targets run the tsc build of their checkout, as production does
 * (bench/compiled.ts); "snapblock-tsx" runs this checkout through the tests' TypeScript loader.
 *
 * CLIENT=kpath (`npm run bench:kpath`) measures the kernel path pods use on a node without the nbd
 * module instead: each server's export through nbdfuse (its own FUSE mount), a loop device with
 * direct I/O on that file, and fio's libaio with O_DIRECT on the loop device. Needs root.
 */
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { compiledBench } from "./compiled.js";
import { cpuSeconds, loadAverage, minorFaults } from "./process-cpu.js";

const run = promisify(execFile);
const HERE = dirname(fileURLToPath(import.meta.url));
const SIZE_MIB = Number(process.env.SIZE_MIB ?? 1024);
const RUNTIME = Number(process.env.RUNTIME ?? 4);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const KPATH = process.env.CLIENT === "kpath";

interface Workload {
  name: string;
  rw: string;
  bs: string;
  qd: number;
  /** Per-op figures for 4 KiB workloads, per-MiB for sequential ones. */
  unit: "op" | "MiB";
}
const ALL_WORKLOADS: Workload[] = [
  { name: "randwrite_qd16", rw: "randwrite", bs: "4k", qd: 16, unit: "op" },
  { name: "randwrite_qd1", rw: "randwrite", bs: "4k", qd: 1, unit: "op" },
  { name: "seqwrite", rw: "write", bs: "1M", qd: 4, unit: "MiB" },
  { name: "randread_qd16", rw: "randread", bs: "4k", qd: 16, unit: "op" },
  { name: "randread_qd1", rw: "randread", bs: "4k", qd: 1, unit: "op" },
  { name: "seqread", rw: "read", bs: "1M", qd: 4, unit: "MiB" },
];
const onlyWorkloads = process.env.WORKLOADS?.split(",");
const WORKLOADS = ALL_WORKLOADS.filter((w) => !onlyWorkloads || onlyWorkloads.includes(w.name));

interface Target {
  name: string;
  /**
   * Starts the server on `socket` for `image`; resolves with its process once it listens, or with
   * none for the raw target: the physical limit instead of a server, fio (libaio, O_DIRECT) on the
   * filled image file itself in every mode, with no CPU or fault figures.
   */
  start(dir: string, socket: string): Promise<ChildProcess | undefined>;
  /** Which NBD export name fio asks for. */
  exportName: string;
}

async function waitForSocket(socket: string, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (existsSync(socket)) return;
    if (child.exitCode !== null) throw new Error(`server exited (${child.exitCode}) before listening`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`server did not listen on ${socket}`);
}

/** A raw image written through with incompressible data, so reads hit real blocks. */
async function filledImage(dir: string): Promise<string> {
  const image = join(dir, "image.raw");
  await run("fio", [
    "--name=fill",
    `--filename=${image}`,
    `--size=${SIZE_MIB}M`,
    "--rw=write",
    "--bs=1M",
    "--ioengine=libaio",
    "--direct=1",
    "--output=/dev/null",
  ]);
  return image;
}

function peer(name: string, command: string, args: (image: string, socket: string) => string[]): Target {
  return {
    name,
    exportName: "",
    async start(dir, socket) {
      const image = await filledImage(dir);
      const child = spawn(command, args(image, socket), { stdio: "ignore" });
      await waitForSocket(socket, child);
      return child;
    },
  };
}

/**
 * snapblock's bench server (bench/nbd-server.ts) with its data file in one I/O mode, from the
 * compiled build of `checkout` (bench/compiled.ts), or through the tests' TypeScript loader.
 */
function snapblock(
  name: string,
  env: Record<string, string>,
  checkout = join(HERE, ".."),
  loader: "compiled" | "tsx" = "compiled",
): Target {
  return {
    name,
    exportName: "bench",
    async start(dir, socket) {
      const server =
        loader === "compiled"
          ? [join(await compiledBench(checkout), "nbd-server.js")]
          : ["--import", "tsx", join(checkout, "bench", "nbd-server.ts")];
      const child = spawn(
        process.execPath,
        [...server, join(dir, "pool"), socket, String(SIZE_MIB * 2 ** 20)],
        {
          stdio: ["ignore", "pipe", "inherit"],
          env: { ...process.env, ...env },
        },
      );
      const lines = createInterface({ input: child.stdout });
      const first = await new Promise<string>((resolve) => lines.once("line", resolve));
      if (first !== "ready") throw new Error(`snapblock bench server said ${first}`);
      return child;
    },
  };
}

/** The raw file: what the disk gives fio with no server in between (see Target.start). */
const raw: Target = {
  name: "raw",
  exportName: "",
  async start(dir) {
    await filledImage(dir);
    return undefined;
  },
};

const ALL_TARGETS: Target[] = [
  raw,
  snapblock("snapblock", { BENCH_DATA_IO: "buffered" }),
  snapblock("snapblock-direct", { BENCH_DATA_IO: "direct" }),
  snapblock("snapblock-direct-uring", { BENCH_DATA_IO: "direct", UV_USE_IO_URING: "1" }),
  snapblock("snapblock-hybrid", { BENCH_DATA_IO: "hybrid" }),
  // With the metrics observers the node plugin runs with (what a production request costs).
  snapblock("snapblock-metrics", { BENCH_DATA_IO: "buffered", BENCH_METRICS: "1" }),
  // The same server through the tests' TypeScript loader, which the figures until 2026-12-02 used.
  snapblock("snapblock-tsx", { BENCH_DATA_IO: "buffered" }, join(HERE, ".."), "tsx"),
  // BASELINE=<another checkout of snapblock>: its build beside this one, for an A/B in one run.
  ...(process.env.BASELINE
    ? [
        snapblock("baseline", { BENCH_DATA_IO: "buffered" }, process.env.BASELINE),
        snapblock("baseline-hybrid", { BENCH_DATA_IO: "hybrid" }, process.env.BASELINE),
        snapblock(
          "baseline-metrics",
          { BENCH_DATA_IO: "buffered", BENCH_METRICS: "1" },
          process.env.BASELINE,
        ),
      ]
    : []),
  peer("qemu-nbd-none", "qemu-nbd", (image, socket) => [
    ...["-k", socket, "-f", "raw", "--cache=none", "--aio=native", "-t", "-e", "8", image],
  ]),
  peer("qemu-nbd-writeback", "qemu-nbd", (image, socket) => [
    ...["-k", socket, "-f", "raw", "--cache=writeback", "--aio=threads", "-t", "-e", "8", image],
  ]),
  peer("nbdkit-file", "nbdkit", (image, socket) => ["-f", "-U", socket, "file", `file=${image}`]),
  peer("nbdkit-file-none", "nbdkit", (image, socket) => [
    ...["-f", "-U", socket, "file", `file=${image}`, "cache=none"],
  ]),
];

interface Sample {
  /** Operations (4 KiB) or MiB moved per second. */
  rate: number;
  /** Server CPU seconds per op or per MiB. */
  cpu: number;
  /** The server's minor page faults per op or per MiB. */
  faults: number;
}

/** Where fio sends its I/O: an NBD URI (fio's nbd engine) or a block device (libaio, O_DIRECT). */
type FioTarget = { uri: string } | { device: string };

async function fio(to: FioTarget, w: Workload): Promise<{ ops: number; bytes: number; seconds: number }> {
  const args = [
    `--name=${w.name}`,
    ...("uri" in to
      ? ["--ioengine=nbd", `--uri=${to.uri}`]
      : ["--ioengine=libaio", "--direct=1", `--filename=${to.device}`]),
    `--rw=${w.rw}`,
    `--bs=${w.bs}`,
    `--iodepth=${w.qd}`,
    `--size=${SIZE_MIB}M`,
    `--runtime=${RUNTIME}`,
    "--time_based",
    "--output-format=json",
    ...(w.rw.includes("write") ? ["--end_fsync=1"] : []),
  ];
  const { stdout } = await run("fio", args, { maxBuffer: 16 << 20 });
  const job = (JSON.parse(stdout.slice(stdout.indexOf("{"))) as { jobs: FioJob[] }).jobs[0]!;
  const side = w.rw.includes("write") ? job.write : job.read;
  return { ops: side.total_ios, bytes: side.io_bytes, seconds: job.job_runtime / 1000 };
}
interface FioJob {
  job_runtime: number;
  read: { total_ios: number; io_bytes: number };
  write: { total_ios: number; io_bytes: number };
}

/** One fio run; the server's CPU and faults when there is a server (`pid`), NaN without one. */
async function measure(pid: number | undefined, to: FioTarget, w: Workload): Promise<Sample> {
  const counters = (): { cpu: number; faults: number } =>
    pid === undefined ? { cpu: NaN, faults: NaN } : { cpu: cpuSeconds(pid), faults: minorFaults(pid) };
  const before = counters();
  const r = await fio(to, w);
  const after = counters();
  const amount = w.unit === "op" ? r.ops : r.bytes / 2 ** 20;
  return {
    rate: amount / r.seconds,
    cpu: (after.cpu - before.cpu) / amount,
    faults: (after.faults - before.faults) / amount,
  };
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const wanted = process.env.TARGETS?.split(",");
const targets = ALL_TARGETS.filter((t) => !wanted || wanted.includes(t.name));
const root = process.env.BENCH_DIR ?? (await mkdtemp(join(tmpdir(), "snapblock-nbd-cpu-")));
/** A server, and in kpath mode its nbdfuse mount and loop device. */
interface Running {
  child: ChildProcess | undefined;
  to: FioTarget;
  fuse?: ChildProcess;
  mount?: string;
  loop?: string;
}
const running = new Map<string, Running>();
const stopAll = (): void => {
  for (const { child, fuse } of running.values()) {
    fuse?.kill("SIGTERM");
    child?.kill("SIGTERM");
  }
};

/** nbdfuse serves the export as a file in its own mount; a direct-I/O loop device over that file. */
async function kernelPath(dir: string, uri: string, r: Running): Promise<void> {
  r.mount = join(dir, "mnt");
  await run("mkdir", ["-p", r.mount]);
  const file = join(r.mount, "disk");
  r.fuse = spawn("nbdfuse", [file, uri], { stdio: "ignore" });
  for (let i = 0; i < 100 && !existsSync(file); i++) {
    if (r.fuse.exitCode !== null) throw new Error(`nbdfuse exited (${r.fuse.exitCode}) for ${uri}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  r.loop = (await run("losetup", ["-f", "--show", "--direct-io=on", file])).stdout.trim();
  r.to = { device: r.loop };
}

async function undoKernelPath(r: Running): Promise<void> {
  if (r.loop) await run("losetup", ["-d", r.loop]).catch(() => undefined);
  if (r.fuse && r.fuse.exitCode === null) {
    const exited = new Promise((resolve) => r.fuse!.once("exit", resolve));
    await run("umount", [r.mount!]).catch(() => r.fuse!.kill("SIGTERM"));
    await exited;
  }
}
process.on("exit", stopAll);
const samples = new Map<string, Sample[]>();
try {
  for (const t of targets) {
    const dir = join(root, t.name);
    await run("mkdir", ["-p", dir]);
    const socket = join(dir, "nbd.sock");
    const uri = `nbd+unix:///${t.exportName}?socket=${socket}`;
    const r: Running = { child: await t.start(dir, socket), to: { uri } };
    running.set(t.name, r);
    if (r.child === undefined) r.to = { device: join(dir, "image.raw") };
    else if (KPATH) await kernelPath(dir, uri, r);
  }
  const loadBefore = loadAverage();
  for (let round = 0; round < ROUNDS; round++) {
    for (const w of WORKLOADS) {
      for (let i = 0; i < targets.length; i++) {
        const t = targets[(i + round) % targets.length]!;
        const { child, to } = running.get(t.name)!;
        const s = await measure(child?.pid, to, w);
        const key = `${t.name} ${w.name}`;
        samples.set(key, [...(samples.get(key) ?? []), s]);
        process.stderr.write(
          `round ${round + 1} ${key}: ${s.rate.toFixed(0)}/s, ` +
            `${(s.cpu * (w.unit === "op" ? 1e6 : 1e3)).toFixed(1)} ${w.unit === "op" ? "us/op" : "ms/MiB"}, ` +
            `${s.faults.toFixed(w.unit === "op" ? 3 : 1)} faults/${w.unit}\n`,
        );
      }
    }
  }
  const loadAfter = loadAverage();
  const client = KPATH
    ? "kernel path (nbdfuse -> loop device, direct I/O -> fio libaio O_DIRECT)"
    : "fio's nbd engine over a unix socket";
  console.log(`# server CPU per I/O: ${SIZE_MIB} MiB images, ${RUNTIME} s runs, ${ROUNDS} rounds, medians`);
  console.log(`# client: ${client}`);
  console.log(`# load average before ${loadBefore.join(" ")}, after ${loadAfter.join(" ")}`);
  console.log();
  const names = targets.map((t) => t.name);
  // HEADLINE: which snapblock target the last columns compare with the best peer and with raw.
  const sb = names.indexOf(process.env.HEADLINE ?? "snapblock");
  const rawAt = names.indexOf("raw");
  const headline = names[sb] ?? "snapblock";
  const rawColumn = rawAt >= 0 ? ` ${headline} / raw |` : "";
  console.log(`| workload | figure | ${names.join(" | ")} | ${headline} / best peer |${rawColumn}`);
  console.log(`|---|---|${names.map(() => "---:|").join("")}---:|${rawAt >= 0 ? "---:|" : ""}`);
  const fixed = (v: number, digits: number): string => (Number.isFinite(v) ? v.toFixed(digits) : "-");
  for (const w of WORKLOADS) {
    const figure = (pick: (s: Sample) => number): number[] =>
      names.map((n) => median(samples.get(`${n} ${w.name}`)!.map(pick)));
    const rate = figure((s) => s.rate);
    const cpu = figure((s) => s.cpu);
    const peers = names.map((_, i) => i).filter((i) => !/^(snapblock|baseline|raw$)/.test(names[i]!));
    const ratio = (a: number, b: number): string =>
      sb >= 0 && b > 0 && Number.isFinite(b) ? `${(a / b).toFixed(2)}x` : "-";
    const row = (label: string, values: number[], best: number, digits: number, vsRaw: boolean): void => {
      const rawCell = rawAt >= 0 ? ` ${vsRaw ? ratio(values[sb]!, values[rawAt]!) : "-"} |` : "";
      console.log(
        `| ${w.name} | ${label} | ${values.map((v) => fixed(v, digits)).join(" | ")} | ${ratio(values[sb]!, best)} |${rawCell}`,
      );
    };
    row(w.unit === "op" ? "IOPS" : "MiB/s", rate, Math.max(...peers.map((i) => rate[i]!)), 0, true);
    const scale = w.unit === "op" ? 1e6 : 1e3;
    const scaled = cpu.map((c) => c * scale);
    row(
      w.unit === "op" ? "CPU us/op" : "CPU ms/MiB",
      scaled,
      Math.min(...peers.map((i) => scaled[i]!)),
      1,
      false,
    );
    // A count, not a time: whether a server keeps taking memory back from the system per I/O.
    const faults = figure((s) => s.faults);
    row(
      `page faults/${w.unit}`,
      faults,
      Math.min(...peers.map((i) => faults[i]!)),
      w.unit === "op" ? 3 : 1,
      false,
    );
  }
} finally {
  for (const r of running.values()) await undoKernelPath(r);
  const exits = [...running.values()].map(
    ({ child }) =>
      new Promise((resolve) =>
        !child || child.exitCode !== null ? resolve(0) : child.once("exit", resolve),
      ),
  );
  stopAll();
  await Promise.all(exits);
  running.clear();
  if (!process.env.BENCH_DIR) await rm(root, { recursive: true, force: true });
}
