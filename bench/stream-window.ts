/**
 * Why engine connections open a 16 MiB HTTP/2 receive window (pkg/engine-service/remote-engine.ts):
 * 64 KiB messages of gRPC server streams between two Node.js processes on loopback, as a pull
 * receives chunks, with HTTP/2's default 64 KiB window and with 16 MiB, over 1 and 4 concurrent
 * streams (a pull keeps 4). Settings are interleaved in each round; CPU is the receiving
 * process's user + system time per GiB.
 *
 *   tsx bench/stream-window.ts            (BENCH_ROUNDS=3, BENCH_MIB=256)
 */
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import {
  Server,
  ServerCredentials,
  credentials,
  makeGenericClientConstructor,
  type ServerWritableStream,
} from "@grpc/grpc-js";

const CHUNK = 64 * 1024;
const MIB = Number(process.env.BENCH_MIB ?? 256);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const WINDOW = 16 * 1024 * 1024;

const identity = (b: Buffer): Buffer => b;
const definition = {
  Stream: {
    path: "/bench.Window/Stream",
    requestStream: false,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
} as const;

if (process.argv[2] === "serve") {
  // The sending side: each call asks for N chunks and gets them as fast as flow control allows.
  const chunk = Buffer.alloc(CHUNK, 7);
  const server = new Server();
  server.addService(definition, {
    Stream: (call: ServerWritableStream<Buffer, Buffer>) => {
      const n = call.request.readUInt32BE(0);
      let sent = 0;
      const pump = (): void => {
        while (sent < n) {
          sent++;
          if (!call.write(chunk)) {
            call.once("drain", pump);
            return;
          }
        }
        call.end();
      };
      pump();
    },
  });
  server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, port) => {
    if (err) throw err;
    process.send!({ port });
  });
} else {
  const server = fork(fileURLToPath(import.meta.url), ["serve"], { execArgv: process.execArgv });
  const port = await new Promise<number>((resolve) =>
    server.once("message", (m: { port: number }) => resolve(m.port)),
  );
  const Client = makeGenericClientConstructor(definition, "Window");
  const total = (MIB * 1024 * 1024) / CHUNK;

  const run = async (window: number | undefined, streams: number) => {
    const client = new Client(
      `127.0.0.1:${port}`,
      credentials.createInsecure(),
      window ? { "grpc-node.flow_control_window": window } : {},
    );
    const started = performance.now();
    const cpu = process.cpuUsage();
    await Promise.all(
      Array.from(
        { length: streams },
        () =>
          new Promise<void>((resolve, reject) => {
            const request = Buffer.alloc(4);
            request.writeUInt32BE(total / streams);
            const call = (client as unknown as { Stream(r: Buffer): NodeJS.ReadableStream }).Stream(request);
            call.on("data", () => undefined);
            call.on("end", resolve);
            call.on("error", reject);
          }),
      ),
    );
    const seconds = (performance.now() - started) / 1000;
    const used = process.cpuUsage(cpu);
    client.close();
    return { mibPerS: MIB / seconds, cpuPerGiB: (used.user + used.system) / 1e6 / (MIB / 1024) };
  };

  const cases = [
    { name: "default 64 KiB", window: undefined },
    { name: "16 MiB", window: WINDOW },
  ];
  const results = new Map<string, { mibPerS: number; cpuPerGiB: number }[]>();
  await run(WINDOW, 4); // warm up both processes
  for (let round = 0; round < ROUNDS; round++) {
    for (const streams of [1, 4]) {
      const order = round % 2 === 0 ? cases : [...cases].reverse();
      for (const c of order) {
        const key = `${c.name}|${streams}`;
        results.set(key, [...(results.get(key) ?? []), await run(c.window, streams)]);
      }
    }
  }
  server.kill();
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  console.log(`# ${MIB} MiB in 64 KiB messages, ${ROUNDS} rounds, medians`);
  console.log("| receive window | streams | MiB/s | CPU s/GiB (receiver) | MiB/s each round |");
  console.log("|---|---:|---:|---:|---|");
  for (const [key, rs] of results) {
    const [name, streams] = key.split("|");
    console.log(
      `| ${name} | ${streams} | ${median(rs.map((r) => r.mibPerS)).toFixed(0)} | ${median(rs.map((r) => r.cpuPerGiB)).toFixed(2)} | ${rs.map((r) => r.mibPerS.toFixed(0)).join(", ")} |`,
    );
  }
}
