import { promises as fs } from "node:fs";
import net from "node:net";
import { asSnapblockError, SnapblockError } from "../errors/index.js";
import type { Logger } from "../log/index.js";

/**
 * Where an export listens: a unix socket (the default way, DESIGN.md section 3) or, only when
 * configured explicitly, a TCP host and port.
 */
export type NbdListenAddress = { socketPath: string } | { host: string; port: number };

/** The address actually bound (for TCP, the port chosen when 0 was asked for). */
export type NbdBoundAddress =
  { kind: "unix"; socketPath: string } | { kind: "tcp"; host: string; port: number };

export interface ListenerOptions {
  address: NbdListenAddress;
  onConnection: (socket: net.Socket, peer: string) => void;
  logger: Logger;
  logFields: Record<string, unknown>;
}

/** Linux sun_path holds 108 bytes including the terminating NUL. */
const MAX_UNIX_PATH_BYTES = 107;
/** Owner-only: the socket gives full access to the volume's data. */
const SOCKET_MODE = 0o600;

export class Listener {
  private ready = false;
  private closing = false;
  private socketInode: number | undefined;

  private constructor(
    private readonly server: net.Server,
    readonly address: NbdBoundAddress,
    private readonly options: ListenerOptions,
  ) {
    // Accept failures (EMFILE, ENFILE...) are emitted on the server; without a listener they
    // would crash the process. Node keeps listening after them.
    server.on("error", (err) => options.logger.error("nbd listener error", { ...options.logFields, err }));
  }

  /**
   * Binds the address. A unix socket is chmod 0600 before any connection is served: connections
   * accepted in the moment between bind and chmod are dropped, so no other user ever gets in.
   * A stale socket file left by a crashed process is replaced; a live one or a non-socket file
   * at the path is an error (we never delete someone else's file).
   */
  static async open(options: ListenerOptions): Promise<Listener> {
    const { address } = options;
    let listener: Listener | undefined;
    // allowHalfOpen: a client may shut down its sending side after NBD_CMD_DISC and still expect
    // the replies to requests it sent before.
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      if (listener === undefined) socket.destroy();
      else listener.accept(socket);
    });
    if ("socketPath" in address) {
      await prepareSocketPath(address.socketPath);
      await listen(server, { path: address.socketPath });
      listener = new Listener(server, { kind: "unix", socketPath: address.socketPath }, options);
      try {
        await fs.chmod(address.socketPath, SOCKET_MODE);
        listener.socketInode = (await fs.stat(address.socketPath)).ino;
      } catch (err) {
        await listener.close();
        throw asSnapblockError(err, `securing NBD socket ${address.socketPath}`);
      }
    } else {
      await listen(server, { host: address.host, port: address.port });
      const bound = server.address();
      const port = typeof bound === "object" && bound !== null ? bound.port : address.port;
      listener = new Listener(server, { kind: "tcp", host: address.host, port }, options);
    }
    listener.ready = true;
    return listener;
  }

  /** Stops accepting and removes the socket file; existing connections are not touched. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    // net.Server.close() only reports once every connection is gone; we manage those ourselves.
    this.server.close((err) => {
      if (err !== undefined)
        this.options.logger.debug("nbd listener close", { ...this.options.logFields, err });
    });
    if (this.address.kind === "unix") await this.removeSocketFile(this.address.socketPath);
  }

  private accept(socket: net.Socket): void {
    if (!this.ready || this.closing) {
      socket.destroy();
      return;
    }
    let peer = "unix";
    if (this.address.kind === "tcp") {
      // proto.md "Protocol phases": both ends SHOULD disable Nagle's algorithm on TCP.
      socket.setNoDelay(true);
      socket.setKeepAlive(true, 60_000);
      peer = `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}`;
    }
    this.options.onConnection(socket, peer);
  }

  /** Unlinks the socket only if it is still ours (another server may have replaced it). */
  private async removeSocketFile(path: string): Promise<void> {
    try {
      const stat = await fs.lstat(path);
      if (stat.isSocket() && stat.ino === this.socketInode) await fs.unlink(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
        this.options.logger.warn("nbd socket file not removed", { ...this.options.logFields, path, err });
      }
    }
  }
}

function listen(server: net.Server, options: net.ListenOptions): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(asSnapblockError(err, "opening NBD listener"));
    server.once("error", onError);
    server.listen(options, () => {
      server.off("error", onError);
      resolve();
    });
  });
}

async function prepareSocketPath(path: string): Promise<void> {
  if (Buffer.byteLength(path) > MAX_UNIX_PATH_BYTES) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `NBD socket path ${path} is longer than ${MAX_UNIX_PATH_BYTES} bytes; use a shorter directory`,
    );
  }
  let stat;
  try {
    stat = await fs.lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw asSnapblockError(err, `checking NBD socket path ${path}`);
  }
  if (!stat.isSocket()) {
    throw new SnapblockError("ALREADY_EXISTS", `${path} exists and is not a socket; refusing to replace it`);
  }
  if (await socketAnswers(path)) {
    throw new SnapblockError("BUSY", `${path} is a socket another server is listening on`);
  }
  await fs.unlink(path);
}

function socketAnswers(path: string): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const probe = net.connect({ path });
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => {
      probe.destroy();
      resolve(false);
    });
  });
}
