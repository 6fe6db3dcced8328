/**
 * The ceiling `npm run bench:cluster` compares a cross-node pull with: a plain copy of the same
 * number of bytes over a mutual-TLS 1.3 loopback connection between two Node.js processes, with
 * the same certificates the nodes use and messages of the pull's size. Nothing is read from or
 * written to disk: this is what Node's TLS can carry between two processes on this machine.
 *
 *   tsx bench/tls-copy.ts serve CA CERT KEY            prints {"port":N} once listening
 *   tsx bench/tls-copy.ts fetch CA CERT KEY PORT BYTES MESSAGE_BYTES [FILE SYNC_EVERY]
 *       prints {"ready":true}, waits for a line on stdin (so the caller can read its CPU time
 *       first), copies, prints {"bytes":N,"seconds":S}. With FILE, a plain copy: what arrives is
 *       written to FILE in MESSAGE_BYTES writes with an fdatasync every SYNC_EVERY writes and at
 *       the end (the pull's commit interval), and the time includes the last fdatasync.
 *
 * The server sends BYTES in MESSAGE_BYTES writes, waiting for 'drain' when the socket buffers
 * fill (as a gRPC server stream does); the client counts what arrives.
 */
import { closeSync, fdatasyncSync, openSync, readFileSync, writeSync } from "node:fs";
import { createInterface } from "node:readline";
import tls from "node:tls";

const [mode, caFile, certFile, keyFile, ...rest] = process.argv.slice(2);
if (!mode || !caFile || !certFile || !keyFile) {
  throw new Error("usage: tls-copy.ts serve|fetch CA CERT KEY [PORT BYTES MESSAGE_BYTES]");
}
const pem = { ca: readFileSync(caFile), cert: readFileSync(certFile), key: readFileSync(keyFile) };

if (mode === "serve") {
  const server = tls.createServer(
    { ...pem, requestCert: true, rejectUnauthorized: true, minVersion: "TLSv1.3" },
    (socket) => {
      // The request: 8 bytes of total length, 4 bytes of message size.
      socket.once("data", (head: Buffer) => {
        const total = Number(head.readBigUInt64BE(0));
        const size = head.readUInt32BE(8);
        const message = Buffer.alloc(size, 0xa5);
        let sent = 0;
        const pump = (): void => {
          while (sent < total) {
            const n = Math.min(size, total - sent);
            sent += n;
            if (!socket.write(n === size ? message : message.subarray(0, n))) {
              socket.once("drain", pump);
              return;
            }
          }
          socket.end();
        };
        pump();
      });
      socket.on("error", () => socket.destroy());
    },
  );
  server.listen(0, "127.0.0.1", () => {
    const address = server.address();
    console.log(JSON.stringify({ port: typeof address === "object" && address ? address.port : 0 }));
  });
} else if (mode === "fetch") {
  const port = Number(rest[0]);
  const total = Number(rest[1]);
  const size = Number(rest[2]);
  const file = rest[3];
  const syncEvery = Number(rest[4] ?? 0);
  const fd = file ? openSync(file, "w") : -1;
  // Received bytes gather here until a message's worth can be written.
  const pending = Buffer.alloc(size);
  let pendingBytes = 0;
  let written = 0;
  let writes = 0;
  const writeOut = (buf: Buffer): void => {
    writeSync(fd, buf, 0, buf.length, written);
    written += buf.length;
    if (syncEvery > 0 && ++writes % syncEvery === 0) fdatasyncSync(fd);
  };
  const keep = (data: Buffer): void => {
    for (let at = 0; at < data.length;) {
      const n = Math.min(size - pendingBytes, data.length - at);
      data.copy(pending, pendingBytes, at, at + n);
      pendingBytes += n;
      at += n;
      if (pendingBytes === size) {
        writeOut(pending);
        pendingBytes = 0;
      }
    }
  };
  console.log(JSON.stringify({ ready: true }));
  const lines = createInterface({ input: process.stdin });
  lines.once("line", () => {
    lines.close();
    const started = performance.now();
    let received = 0;
    const socket = tls.connect({ ...pem, host: "127.0.0.1", port, servername: "localhost" }, () => {
      const head = Buffer.alloc(12);
      head.writeBigUInt64BE(BigInt(total), 0);
      head.writeUInt32BE(size, 8);
      socket.write(head);
    });
    socket.on("data", (data: Buffer) => {
      received += data.length;
      if (fd >= 0) keep(data);
    });
    socket.on("end", () => {
      if (fd >= 0) {
        if (pendingBytes > 0) writeOut(pending.subarray(0, pendingBytes));
        fdatasyncSync(fd);
        closeSync(fd);
      }
      const seconds = (performance.now() - started) / 1000;
      console.log(JSON.stringify({ bytes: received, seconds, protocol: socket.getProtocol() }));
      socket.destroy();
    });
    socket.on("error", (err) => {
      console.error(err);
      process.exit(1);
    });
  });
} else {
  throw new Error(`unknown mode ${mode}`);
}
