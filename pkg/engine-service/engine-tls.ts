import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { ServerCredentials, credentials, type ChannelCredentials, type ChannelOptions } from "@grpc/grpc-js";
import { SnapblockError, asSnapblockError } from "../errors/index.js";

/**
 * How the engine service is protected. Between machines it is mutual TLS: both sides present a
 * certificate signed by the cluster's engine CA (files mounted from a Secret), and a peer without
 * one is refused during the handshake, before any call. Plaintext exists only for a process
 * talking to itself or to a sibling on the same machine, and only when asked for by name
 * (--insecure-loopback), so that a missing Secret can never silently downgrade a cluster.
 */
export interface TlsFiles {
  /** PEM of the CA that signs every engine-service certificate. */
  caFile: string;
  /** PEM certificate (chain) of this process. */
  certFile: string;
  /** PEM private key of this process. */
  keyFile: string;
}

export interface EngineTransportOptions {
  tls?: TlsFiles;
  /** Plaintext, allowed only when every address involved is a loopback address. */
  insecureLoopback?: boolean;
  /**
   * Client: the name the server certificate must carry, when it is not the host of the address
   * (one certificate for every node plugin, addressed by pod IP).
   */
  serverName?: string;
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

export function serverCredentials(o: EngineTransportOptions, address: string): ServerCredentials {
  checkTransport(o, address, "engine service");
  if (!o.tls) return ServerCredentials.createInsecure();
  const pem = readTls(o.tls);
  // checkClientCertificate = true: a client without a certificate from our CA fails the handshake.
  return ServerCredentials.createSsl(pem.ca, [{ private_key: pem.key, cert_chain: pem.cert }], true);
}

export function channelCredentials(
  o: EngineTransportOptions,
  address: string,
): { creds: ChannelCredentials; options: ChannelOptions } {
  checkTransport(o, address, `engine client of ${address}`);
  if (!o.tls) return { creds: credentials.createInsecure(), options: {} };
  const pem = readTls(o.tls);
  const options: ChannelOptions = o.serverName
    ? { "grpc.ssl_target_name_override": o.serverName, "grpc.default_authority": o.serverName }
    : {};
  return { creds: credentials.createSsl(pem.ca, pem.key, pem.cert), options };
}

function readTls(files: TlsFiles): { ca: Buffer; cert: Buffer; key: Buffer } {
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
