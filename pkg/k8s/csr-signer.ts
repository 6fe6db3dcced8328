import { asSnapblockError } from "../errors/index.js";
import { describeIdentity, readRequest, signRequest, type PemPair } from "../engine-service/index.js";
import type { Logger } from "../log/index.js";
import type { KubeApi, KubeCsr } from "./kube-api.js";

/** The signerName of snapblock's engine CA in CertificateSigningRequests. */
export const ENGINE_SIGNER = "snapblock.dev/engine";

/**
 * Set by the API server on a request made with a bound service account token (Kubernetes 1.30+,
 * ServiceAccountTokenPodNodeInfo): the node the requesting pod runs on. It cannot be forged by
 * the requester, which is what lets one node's plugin get a certificate for its own node only.
 */
export const NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name";

const ALLOWED_USAGES = new Set(["digital signature", "key encipherment", "server auth", "client auth"]);

export interface CsrSignerOptions {
  api: KubeApi;
  /** The engine CA (certificate and key) the controller holds. */
  ca: PemPair;
  /** The node plugins' service account, "system:serviceaccount:<namespace>:<name>". */
  nodeServiceAccount: string;
  /** Longest certificate issued, in days (a request may ask for less with expirationSeconds). */
  maxDays: number;
  logger: Logger;
}

/**
 * The controller's signer of node certificates (certificates.k8s.io, signerName
 * snapblock.dev/engine): every node plugin asks for a certificate naming its own node, and the
 * controller approves and signs only what that requester may have:
 *
 * - the request comes from the node plugins' service account;
 * - it names exactly one identity, snapblock://node/<id> (never the controller's);
 * - <id> is the node the requesting pod runs on, as the API server recorded it in the request's
 *   user info (NODE_NAME_EXTRA); a request without that record is denied (the API server is
 *   older than 1.30, or the token is not a bound pod token), since nothing else proves it;
 * - the usages are those of a node certificate.
 *
 * Anything else is Denied with the reason, which the node plugin logs. One node's stolen key
 * therefore never becomes a certificate for another node.
 */
export class CsrSigner {
  constructor(private readonly o: CsrSignerOptions) {}

  /** One pass over the pending requests of our signer. */
  async reconcile(): Promise<void> {
    for (const csr of await this.o.api.listCsrs(ENGINE_SIGNER)) {
      if (csr.denied || csr.failed || csr.certificatePem) continue;
      try {
        await this.handle(csr);
      } catch (err) {
        this.o.logger.warn("signing a node certificate request failed; retrying on the next pass", {
          csr: csr.name,
          err: asSnapblockError(err, `CertificateSigningRequest ${csr.name}`),
        });
      }
    }
  }

  private async handle(csr: KubeCsr): Promise<void> {
    const refusal = await this.refusal(csr);
    if (refusal) {
      this.o.logger.warn("denied a node certificate request", {
        csr: csr.name,
        requester: csr.username,
        reason: refusal,
      });
      await this.o.api.decideCsr(csr.name, { approved: false, reason: "SnapblockPolicy", message: refusal });
      return;
    }
    if (!csr.approved) {
      await this.o.api.decideCsr(csr.name, {
        approved: true,
        reason: "SnapblockNodeIdentity",
        message: "the requester runs on the node it asks a certificate for",
      });
    }
    const days = Math.max(
      1 / 24,
      Math.min(this.o.maxDays, (csr.expirationSeconds ?? this.o.maxDays * 86_400) / 86_400),
    );
    const certificatePem = await signRequest({ ca: this.o.ca, csrPem: csr.requestPem, days });
    await this.o.api.setCsrCertificate(csr.name, certificatePem);
    const { identity } = await readRequest(csr.requestPem);
    this.o.logger.info("issued a node certificate", {
      csr: csr.name,
      identity: describeIdentity(identity),
      days,
    });
  }

  /** Why this request must be denied; undefined when it may be signed. */
  private async refusal(csr: KubeCsr): Promise<string | undefined> {
    if (csr.username !== this.o.nodeServiceAccount) {
      return `requested by ${csr.username ?? "an unknown user"}, not by the node plugins' service account ${this.o.nodeServiceAccount}`;
    }
    let identity;
    try {
      ({ identity } = await readRequest(csr.requestPem));
    } catch (err) {
      return asSnapblockError(err, "reading the request").message;
    }
    if (identity.role !== "node") return "node plugins may only ask for node certificates";
    const nodes = csr.extra?.[NODE_NAME_EXTRA] ?? [];
    if (nodes.length !== 1) {
      return `the request does not say which node the requester runs on (${NODE_NAME_EXTRA}: Kubernetes 1.30+ with bound service account tokens is needed)`;
    }
    if (nodes[0] !== identity.nodeId) {
      return `the requester runs on node ${nodes[0]} but asks for a certificate of node ${identity.nodeId}`;
    }
    const extra = csr.usages.filter((u) => !ALLOWED_USAGES.has(u));
    if (extra.length > 0) return `usages ${extra.join(", ")} are not those of a node certificate`;
    return undefined;
  }
}
