import { readFileSync } from "node:fs";
import path from "node:path";
import {
  checkOwnCertificate,
  issueOwnCertificate,
  type EngineTransportOptions,
  type PemPair,
  type TlsMaterial,
} from "../pkg/engine-service/index.js";
import { NodeCertificate, type KubeApi } from "../pkg/k8s/index.js";
import type { Logger } from "../pkg/log/index.js";
import { UsageError } from "./usage-error.js";

/**
 * How a process gets its engine-service TLS (docs/cluster.md, "TLS and identities"):
 *
 *   node        --tls-ca --tls-cert --tls-key   files naming this node (static setups, tests)
 *               --tls-ca --tls-bootstrap        a key made here and a certificate from the
 *                                               controller's signer (Kubernetes)
 *   controller  --tls-ca --tls-cert --tls-key   files naming the controller
 *               --tls-ca --tls-ca-key           the controller holds the CA: it issues its own
 *                                               client certificate (and may sign node requests)
 *   either      --insecure-loopback             plaintext, loopback addresses only
 */
export interface TlsFlags {
  "tls-ca"?: string;
  "tls-cert"?: string;
  "tls-key"?: string;
  "tls-ca-key"?: string;
  "tls-bootstrap"?: boolean;
  "insecure-loopback"?: boolean;
}

const NEEDS_TLS =
  "the engine service needs mutual TLS: --tls-ca with --tls-cert and --tls-key (or --tls-bootstrap on a node, --tls-ca-key on the controller); plaintext only with --insecure-loopback on a loopback address";

/** Days of the controller's own certificate; it is issued again at every start. */
const CONTROLLER_CERT_DAYS = 365;
/** Days a node asks for; the signer may cap it (--node-certificate-days). */
export const NODE_CERT_DAYS = 30;

function plaintext(values: TlsFlags): EngineTransportOptions | undefined {
  if (!values["insecure-loopback"]) return undefined;
  const tlsGiven = ["tls-ca", "tls-cert", "tls-key", "tls-ca-key"].some(
    (k) => values[k as keyof TlsFlags] !== undefined,
  );
  if (tlsGiven || values["tls-bootstrap"])
    throw new UsageError("--insecure-loopback and --tls-* exclude each other");
  return { insecureLoopback: true };
}

function files(values: TlsFlags, cwd: string): EngineTransportOptions {
  const { "tls-ca": ca, "tls-cert": cert, "tls-key": key } = values;
  if (!ca || !cert || !key) throw new UsageError(NEEDS_TLS);
  return {
    tls: {
      caFile: path.resolve(cwd, ca),
      certFile: path.resolve(cwd, cert),
      keyFile: path.resolve(cwd, key),
    },
  };
}

/** A node's transport; with --tls-bootstrap the certificate still has to be ensured (kube). */
export function nodeTls(
  values: TlsFlags,
  o: { cwd: string; nodeId: string; dataDir: string; logger: Logger },
): { transport: EngineTransportOptions; bootstrap?: (api: KubeApi) => NodeCertificate } {
  const plain = plaintext(values);
  if (plain) return { transport: plain };
  if (!values["tls-bootstrap"]) {
    const transport = files(values, o.cwd);
    checkOwnCertificate(transport, { role: "node", nodeId: o.nodeId });
    return { transport };
  }
  if (!values["tls-ca"] || values["tls-cert"] || values["tls-key"]) {
    throw new UsageError("--tls-bootstrap takes --tls-ca (the engine CA) and no --tls-cert/--tls-key");
  }
  const caFile = path.resolve(o.cwd, values["tls-ca"]);
  let material: NodeCertificate | undefined;
  const lazy: TlsMaterial = {
    describe: "this node's bootstrapped certificate",
    current: () => {
      if (!material) throw new UsageError("the node certificate was used before it was obtained");
      return material.current();
    },
  };
  return {
    transport: { tls: lazy },
    bootstrap: (api) => {
      material = new NodeCertificate({
        api,
        nodeId: o.nodeId,
        dir: path.join(o.dataDir, "engine-tls"),
        caFile,
        days: NODE_CERT_DAYS,
        logger: o.logger,
      });
      return material;
    },
  };
}

/** The controller's transport; with --tls-ca-key also the CA it holds (for signing). */
export async function controllerTls(
  values: TlsFlags,
  cwd: string,
): Promise<{ transport: EngineTransportOptions; ca?: PemPair }> {
  const plain = plaintext(values);
  if (plain) return { transport: plain };
  if (values["tls-bootstrap"]) throw new UsageError("--tls-bootstrap is for nodes");
  if (!values["tls-ca-key"]) {
    const transport = files(values, cwd);
    checkOwnCertificate(transport, { role: "controller" });
    return { transport };
  }
  if (!values["tls-ca"] || values["tls-cert"] || values["tls-key"]) {
    throw new UsageError("--tls-ca-key takes --tls-ca (the CA certificate) and no --tls-cert/--tls-key");
  }
  const ca: PemPair = {
    certPem: readFileSync(path.resolve(cwd, values["tls-ca"]), "utf8"),
    keyPem: readFileSync(path.resolve(cwd, values["tls-ca-key"]), "utf8"),
  };
  const own = await issueOwnCertificate({ ca, identity: { role: "controller" }, days: CONTROLLER_CERT_DAYS });
  const pem = { ca: Buffer.from(ca.certPem), cert: Buffer.from(own.certPem), key: Buffer.from(own.keyPem) };
  return { transport: { tls: { describe: "the controller's own certificate", current: () => pem } }, ca };
}
