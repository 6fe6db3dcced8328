import net from "node:net";
import { asSnapblockError } from "../errors/index.js";
import { prepareSocketPath, removeOwnSocket, restrictSocket } from "../files/index.js";
import type { Logger } from "../log/index.js";

/**
 * Where an export listens: a unix socket (the default way, docs/design.md section 3) or, only when
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
    // the replies to requests it sent before. pauseOnConnect: the connection's reader decides how
    // the socket is read (into memory it owns, see pkg/streams openReader) before any byte is.
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => {
      if (listener === undefined) socket.destroy();
      else listener.accept(socket);
    });
    if ("socketPath" in address) {
      await prepareSocketPath(address.socketPath, "NBD");
      await listen(server, { path: address.socketPath });
      listener = new Listener(server, { kind: "unix", socketPath: address.socketPath }, options);
      try {
        listener.socketInode = await restrictSocket(address.socketPath, SOCKET_MODE);
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
    if (this.address.kind === "unix") {
      const path = this.address.socketPath;
      await removeOwnSocket(path, this.socketInode).catch((err: unknown) => {
        this.options.logger.warn("nbd socket file not removed", { ...this.options.logFields, path, err });
      });
    }
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
