import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import type { PeerCertificate } from "node:tls";
import { credentials, type ChannelCredentials, type ChannelOptions } from "@grpc/grpc-js";
import { SnapblockError, asSnapblockError } from "../errors/index.js";
import { describeIdentity, identityOfCertificate, type EngineIdentity } from "./engine-identity.js";

/**
 * How the engine service is protected. Between machines it is mutual TLS 1.3: both sides present
 * a certificate signed by the cluster's engine CA, each naming one identity (engine-identity.ts),
 * and a peer without one is refused during the handshake, before any call. Plaintext exists only
 * for a process talking to itself or to a sibling on the same machine, and only when asked for by
 * name (--insecure-loopback), so that a missing Secret can never silently downgrade a cluster.
 */
export interface TlsFiles {
  /** PEM of the CA that signs every engine-service certificate. */
  caFile: string;
  /** PEM certificate (chain) of this process. */
  certFile: string;
  /** PEM private key of this process. */
  keyFile: string;
}

/**
 * TLS material held in memory instead of files: a certificate the process issued itself (the
 * controller, from the CA it holds) or obtained and renews (a node, from the signer). current()
 * is read whenever credentials are made, so a renewal reaches every new channel.
 */
export interface TlsMaterial {
  current(): TlsPem;
  /** Says what it is, for error messages. */
  describe: string;
}

export type TlsSource = TlsFiles | TlsMaterial;

export interface EngineTransportOptions {
  tls?: TlsSource;
  /** Plaintext, allowed only when every address involved is a loopback address. */
  insecureLoopback?: boolean;
}

export interface HostPort {
  host: string;
  port: number;
}

/** "host:port" or "[v6]:port"; port 0 lets a server pick one. */
export function parseHostPort(address: string): HostPort {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!host || !Number.isInteger(port) || port > 65535) {
    throw new SnapblockError("INVALID_ARGUMENT", `address ${JSON.stringify(address)}: use host:port`);
  }
  return { host, port };
}

export function isLoopbackHost(host: string): boolean {
  if (host === "localhost" || host === "::1") return true;
  return isIP(host) === 4 && host.startsWith("127.");
}

function checkTransport(o: EngineTransportOptions, address: string, role: string): void {
  if (o.tls && o.insecureLoopback) {
    throw new SnapblockError("INVALID_ARGUMENT", `${role}: choose TLS files or insecure loopback, not both`);
  }
  if (!o.tls && !o.insecureLoopback) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `${role}: the engine service needs TLS files (CA, certificate, key); plaintext only with --insecure-loopback`,
    );
  }
  if (o.insecureLoopback && !isLoopbackHost(parseHostPort(address).host)) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `${role}: plaintext is allowed on loopback only, and ${address} is not a loopback address; use TLS`,
    );
  }
}

/** Server side: checks the transport choice for this address; the TLS files when TLS is on. */
export function serverTls(o: EngineTransportOptions, address: string): TlsPem | undefined {
  checkTransport(o, address, "engine service");
  return o.tls ? readTls(o.tls) : undefined;
}

/**
 * Client side: credentials that accept the server only when its certificate names node
 * `expectedNodeId` (hostname checks do not apply: nodes are dialled by address, and the identity
 * is what matters: a node that patched another node's announced address is refused here).
 */
export function channelCredentials(
  o: EngineTransportOptions,
  address: string,
  expectedNodeId: string,
): ChannelCredentials {
  checkTransport(o, address, `engine client of ${address}`);
  if (!o.tls) return credentials.createInsecure();
  const pem = readTls(o.tls);
  return credentials.createSsl(pem.ca, pem.key, pem.cert, {
    checkServerIdentity: nodeIdentityCheck(address, expectedNodeId),
  });
}

/** A TLS client's server check: the certificate must name node `expectedNodeId`. */
export function nodeIdentityCheck(
  address: string,
  expectedNodeId: string,
): (host: string, cert: PeerCertificate) => Error | undefined {
  return (_host, cert) => {
    const identity = identityOfCertificate(cert);
    if (identity?.role === "node" && identity.nodeId === expectedNodeId) return undefined;
    return new Error(
      `the engine service at ${address} presented a certificate for ${describeIdentity(identity)}, not node/${expectedNodeId}: check the node's announced address`,
    );
  };
}

/**
 * Channel options of a client of the engine service. Nodes are dialled by their announced pod IP,
 * and grpc-js sends the target host as the TLS server name (SNI) unless told otherwise; an IP
 * there is forbidden by RFC 6066 and reported by Node as DEP0123 on every such connection. The
 * server does not look at SNI and the client checks the node's identity in its certificate (its
 * URI SAN, channelCredentials), so a fixed name stands in for it.
 */
export function channelOptions(o: EngineTransportOptions): ChannelOptions {
  return o.tls ? { "grpc.ssl_target_name_override": ENGINE_TLS_SERVER_NAME } : {};
}

/** The TLS server name a client of the engine service sends (see channelOptions). */
export const ENGINE_TLS_SERVER_NAME = "snapblock-engine";

/**
 * The identity this process's own certificate names, checked against what the process is: a
 * node must hold its own node's certificate, the controller the controller's. Caught at start,
 * a wrong Secret is a clear error instead of refused calls later.
 */
export function checkOwnCertificate(o: EngineTransportOptions, expected: EngineIdentity): void {
  if (!o.tls) return;
  const pem = readTls(o.tls);
  let identity: EngineIdentity | undefined;
  try {
    identity = identityOfCertificate({ subjectaltname: new X509Certificate(pem.cert).subjectAltName ?? "" });
  } catch (err) {
    throw asSnapblockError(err, `reading the engine-service certificate ${describeSource(o.tls)}`);
  }
  const same =
    identity?.role === expected.role &&
    (identity.role === "controller" || (expected.role === "node" && identity.nodeId === expected.nodeId));
  if (!same) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `the engine-service certificate ${describeSource(o.tls)} names ${describeIdentity(identity)}, but this process is ${describeIdentity(expected)}: give it its own certificate (URI SAN snapblock://${expected.role === "controller" ? "controller" : `node/${expected.nodeId}`})`,
    );
  }
}

export interface TlsPem {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/** The PEMs of a TLS source now (files are read again each time: they may have been renewed). */
export function readTls(source: TlsSource): TlsPem {
  if ("current" in source) return source.current();
  const files = source;
  const read = (file: string, what: string): Buffer => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw asSnapblockError(err, `reading the engine-service TLS ${what} ${file}`);
    }
  };
  return {
    ca: read(files.caFile, "CA"),
    cert: read(files.certFile, "certificate"),
    key: read(files.keyFile, "key"),
  };
}

function describeSource(source: TlsSource): string {
  return "current" in source ? source.describe : source.certFile;
}
