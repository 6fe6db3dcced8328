import type net from "node:net";
import tls from "node:tls";
import type { Logger } from "../log/index.js";
import { asSnapblockError } from "../errors/index.js";
import type { HostPort, TlsPem } from "./engine-tls.js";

/**
 * The engine service's own TLS endpoint. grpc-js's built-in TLS server cannot require TLS 1.3 nor
 * report refused handshakes, so TLS is terminated here (mutual, TLS 1.3 only, a client
 * certificate from the engine CA required) and each verified connection is handed to the gRPC
 * server through its connection injector. TLS 1.3 offers only AEAD cipher suites, so nothing
 * weaker can be negotiated; TLS 1.2 and older clients are refused in the handshake.
 */
export interface TlsListener {
  readonly port: number;
  /** New connections use this certificate and key from now on (renewal). */
  reload(pem: TlsPem): void;
  close(): Promise<void>;
}

export interface TlsListenerOptions {
  at: HostPort;
  pem: TlsPem;
  /**
   * Receives each connection whose client certificate verified; its `alpnProtocol` says which of
   * `protocols` the client chose.
   */
  onConnection: (socket: tls.TLSSocket) => void;
  /** ALPN protocols offered, in order of preference (default: gRPC's "h2" only). */
  protocols?: string[];
  logger: Logger;
}

/**
 * The address recorded for the TCP socket under a server-side TLS socket. Node links them only as
 * `_parent` (lib/_tls_wrap.js, the socket tls.Server wrapped); there is no public link. The TLS
 * socket's own address is the fallback, and test/cluster/engine-service.test.ts checks that a
 * peer that resets before the handshake is logged with its address.
 */
function peerOf(socket: tls.TLSSocket, peers: WeakMap<object, string | undefined>): string {
  const parent = (socket as unknown as { _parent?: unknown })._parent;
  const recorded = typeof parent === "object" && parent !== null ? peers.get(parent) : undefined;
  return recorded ?? addressOf(socket) ?? UNKNOWN_PEER;
}

/** A peer that reset while its connection waited to be accepted: the kernel has forgotten it. */
const UNKNOWN_PEER = "unknown (the peer was gone before its connection was accepted)";

function addressOf(socket: net.Socket): string | undefined {
  return socket.remoteAddress === undefined
    ? undefined
    : `${socket.remoteAddress}:${socket.remotePort ?? "?"}`;
}

export async function listenTls(o: TlsListenerOptions): Promise<TlsListener> {
  const server = tls.createServer({
    ca: o.pem.ca,
    cert: o.pem.cert,
    key: o.pem.key,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: "TLSv1.3",
    ALPNProtocols: o.protocols ?? ["h2"],
  });
  // The peer's address, read from the TCP socket as it is accepted: a TLS socket whose peer has
  // reset (or that Node destroyed after refusing its certificate) can no longer tell it, and a
  // refused handshake must still be logged with where it came from.
  const peers = new WeakMap<object, string | undefined>();
  server.prependListener("connection", (raw: net.Socket) => {
    peers.set(raw, addressOf(raw));
  });
  server.on("secureConnection", (socket) => {
    // Refused handshakes never get here; belt and braces for the authorized flag.
    if (!socket.authorized) socket.destroy();
    else o.onConnection(socket);
  });
  server.on("tlsClientError", (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
    o.logger.warn("engine service refused a connection in the TLS handshake", {
      remote: peerOf(socket, peers),
      // A client certificate that does not verify is refused after the handshake's last message,
      // which Node reports as a hang-up: the verification error is the reason.
      reason: socket.authorizationError ?? err.code ?? err.message,
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) =>
      reject(asSnapblockError(err, `binding the engine service to ${o.at.host}:${o.at.port}`)),
    );
    server.listen(o.at.port, o.at.host, () => resolve());
  });
  const bound = server.address();
  const port = typeof bound === "object" && bound !== null ? bound.port : o.at.port;
  return {
    port,
    reload: (pem) => server.setSecureContext({ ca: pem.ca, cert: pem.cert, key: pem.key }),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
      }),
  };
}
