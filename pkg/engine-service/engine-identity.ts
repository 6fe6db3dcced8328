import type { PeerCertificate } from "node:tls";
import { StatusError } from "../errors/index.js";

/**
 * Who is at the other end of an engine-service connection, as its certificate says. Every
 * certificate of the engine CA names exactly one identity in a URI subject alternative name:
 *
 *   snapblock://controller          the controller (a client only)
 *   snapblock://node/<node-id>      one node (server; client too, for node-to-node copies)
 *
 * A node's certificate names its own node id, so one node's key cannot pass for another, and the
 * controller checks that the node it dials is the node it means (docs/cluster.md, "TLS and identities").
 */
export type EngineIdentity = { role: "controller" } | { role: "node"; nodeId: string };

const SCHEME = "snapblock://";

/** The URI SAN a certificate for this identity carries. */
export function identityUri(identity: EngineIdentity): string {
  return identity.role === "controller" ? `${SCHEME}controller` : `${SCHEME}node/${identity.nodeId}`;
}

/** Text for log lines: "controller" or "node/<id>". */
export function describeIdentity(identity: EngineIdentity | undefined): string {
  if (!identity) return "unauthenticated";
  return identity.role === "controller" ? "controller" : `node/${identity.nodeId}`;
}

/**
 * The identity a peer certificate names; undefined when it names none or more than one (a
 * certificate that could be two callers is none). Reads the SAN list as Node reports it
 * ("DNS:a, URI:snapblock://node/x").
 */
export function identityOfCertificate(
  cert: Pick<PeerCertificate, "subjectaltname"> | undefined,
): EngineIdentity | undefined {
  const sans = (cert?.subjectaltname ?? "").split(",").map((s) => s.trim());
  const found: EngineIdentity[] = [];
  for (const san of sans) {
    if (!san.startsWith(`URI:${SCHEME}`)) continue;
    const rest = san.slice(`URI:${SCHEME}`.length);
    if (rest === "controller") found.push({ role: "controller" });
    else if (/^node\/[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(rest))
      found.push({ role: "node", nodeId: rest.slice(5) });
  }
  return found.length === 1 ? found[0] : undefined;
}

/** PERMISSION_DENIED naming the caller and what it may not do. */
export function permissionDenied(identity: EngineIdentity | undefined, what: string): StatusError {
  return new StatusError("PERMISSION_DENIED", `${describeIdentity(identity)} may not ${what}`);
}
