import { createPrivateKey, webcrypto } from "node:crypto";
// @peculiar/x509 resolves its algorithms through tsyringe, which needs the Reflect metadata API.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { SnapblockError } from "../errors/index.js";
import { identityOfCertificate, identityUri, type EngineIdentity } from "./engine-identity.js";

/**
 * The engine CA's certificate work, in-process (@peculiar/x509 over Node's WebCrypto): making a
 * node's key and certificate request, reading a request, signing it, and issuing the
 * controller's own client certificate. Every certificate names exactly one identity (a URI SAN,
 * engine-identity.ts) and carries only the usages that identity needs: the controller is a
 * client only, a node is a server and (for node-to-node copies) a client.
 *
 * The keys made here are ECDSA P-256. The CA's own key is whatever made it: RSA from the chart's
 * generate mode (Helm's genCA), ECDSA P-256 from cert-manager and deploy/engine-tls.sh.
 */
type CryptoKey = webcrypto.CryptoKey;
const crypto = webcrypto;
x509.cryptoProvider.set(crypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const EC: webcrypto.EcKeyGenParams = { name: "ECDSA", namedCurve: "P-256" };
const SIGN: webcrypto.EcdsaParams = { name: "ECDSA", hash: "SHA-256" };
const EKU_SERVER = "1.3.6.1.5.5.7.3.1";
const EKU_CLIENT = "1.3.6.1.5.5.7.3.2";

export interface PemPair {
  certPem: string;
  keyPem: string;
}

function usagesOf(identity: EngineIdentity): string[] {
  return identity.role === "controller" ? [EKU_CLIENT] : [EKU_SERVER, EKU_CLIENT];
}

async function exportKey(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await crypto.subtle.exportKey("pkcs8", key), "PRIVATE KEY");
}

/**
 * The CA's signing key in whatever PEM form it comes (PKCS#8, PKCS#1 RSA as Helm's genCA makes
 * it, SEC1 EC as older openssl makes it), with the algorithm it signs with.
 */
async function importCaKey(
  keyPem: string,
): Promise<{ key: CryptoKey; algorithm: webcrypto.EcdsaParams | webcrypto.Algorithm }> {
  try {
    const parsed = createPrivateKey(keyPem);
    const der = parsed.export({ type: "pkcs8", format: "der" });
    if (parsed.asymmetricKeyType === "rsa") {
      const params = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
      return { key: await crypto.subtle.importKey("pkcs8", der, params, false, ["sign"]), algorithm: params };
    }
    const curve = parsed.asymmetricKeyDetails?.namedCurve;
    const named = curve === "prime256v1" ? "P-256" : curve === "secp384r1" ? "P-384" : undefined;
    if (parsed.asymmetricKeyType === "ec" && named) {
      const key = await crypto.subtle.importKey("pkcs8", der, { name: "ECDSA", namedCurve: named }, false, [
        "sign",
      ]);
      return { key, algorithm: { name: "ECDSA", hash: named === "P-384" ? "SHA-384" : "SHA-256" } };
    }
    throw new Error(`unsupported key type ${parsed.asymmetricKeyType ?? "?"} ${curve ?? ""}`);
  } catch (err) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      `the engine CA key must be a PEM RSA or ECDSA (P-256, P-384) private key: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

function serial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0] ?? 0) & 0x7f; // positive
  return Buffer.from(bytes).toString("hex");
}

/** A new self-signed engine CA (tests; the chart and deploy/engine-tls.sh make their own). */
export async function createCa(options: { commonName: string; days: number }): Promise<PemPair> {
  const keys = await crypto.subtle.generateKey(EC, true, ["sign", "verify"]);
  const now = new Date();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${options.commonName}`,
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + options.days * 86_400_000),
    keys,
    signingAlgorithm: SIGN,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    ],
  });
  return { certPem: cert.toString("pem"), keyPem: await exportKey(keys.privateKey) };
}

/** A node's (or the controller's) new key and a request for a certificate naming `identity`. */
export async function createKeyAndRequest(
  identity: EngineIdentity,
): Promise<{ keyPem: string; csrPem: string }> {
  const keys = await crypto.subtle.generateKey(EC, true, ["sign", "verify"]);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${identity.role === "controller" ? "snapblock-controller" : `snapblock-node-${identity.nodeId}`}`,
    keys,
    signingAlgorithm: SIGN,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: identityUri(identity) }])],
  });
  return { keyPem: await exportKey(keys.privateKey), csrPem: csr.toString("pem") };
}

/**
 * What a certificate request asks for, checked: a valid self-signature, an ECDSA P-256 key, and
 * exactly one subject alternative name, a snapblock identity. Anything else is refused with the
 * reason (the signer denies the request with it).
 */
export async function readRequest(
  csrPem: string,
): Promise<{ identity: EngineIdentity; request: x509.Pkcs10CertificateRequest }> {
  let request: x509.Pkcs10CertificateRequest;
  try {
    request = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (err) {
    throw new SnapblockError("INVALID_ARGUMENT", "not a PEM PKCS#10 certificate request", { cause: err });
  }
  if (!(await request.verify())) {
    throw new SnapblockError("INVALID_ARGUMENT", "the certificate request's signature does not verify");
  }
  const algorithm = request.publicKey.algorithm as webcrypto.EcKeyAlgorithm;
  if (algorithm.name !== "ECDSA" || algorithm.namedCurve !== "P-256") {
    throw new SnapblockError("INVALID_ARGUMENT", "the certificate request's key must be ECDSA P-256");
  }
  const san = request.extensions.find(
    (e): e is x509.SubjectAlternativeNameExtension => e instanceof x509.SubjectAlternativeNameExtension,
  );
  const names = san?.names.items ?? [];
  const uris = names.filter((n) => n.type === "url").map((n) => `URI:${n.value}`);
  const identity =
    names.length === 1 ? identityOfCertificate({ subjectaltname: uris.join(", ") }) : undefined;
  if (!identity) {
    throw new SnapblockError(
      "INVALID_ARGUMENT",
      "the certificate request must name exactly one subject alternative name, a snapblock identity URI",
    );
  }
  return { identity, request };
}

/**
 * Signs a certificate for `identity` over the request's public key (the caller has checked
 * that the requester may have that identity). Valid from a minute ago (clock skew) for `days`.
 */
export async function signRequest(options: { ca: PemPair; csrPem: string; days: number }): Promise<string> {
  const { identity, request } = await readRequest(options.csrPem);
  // readRequest checked the key is ECDSA P-256; rawData is its SubjectPublicKeyInfo.
  const publicKey = await crypto.subtle.importKey("spki", request.publicKey.rawData, EC, true, ["verify"]);
  return issue(options.ca, identity, publicKey, options.days);
}

/** The controller's own client certificate and key, issued from the CA it holds. */
export async function issueOwnCertificate(options: {
  ca: PemPair;
  identity: EngineIdentity;
  days: number;
}): Promise<PemPair> {
  const keys = await crypto.subtle.generateKey(EC, true, ["sign", "verify"]);
  const certPem = await issue(options.ca, options.identity, keys.publicKey, options.days);
  return { certPem, keyPem: await exportKey(keys.privateKey) };
}

async function issue(
  ca: PemPair,
  identity: EngineIdentity,
  publicKey: CryptoKey,
  days: number,
): Promise<string> {
  const caCert = new x509.X509Certificate(ca.certPem);
  const caKey = await importCaKey(ca.keyPem);
  const now = new Date();
  const notAfter = new Date(Math.min(now.getTime() + days * 86_400_000, caCert.notAfter.getTime()));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${identity.role === "controller" ? "snapblock-controller" : `snapblock-node-${identity.nodeId}`}`,
    issuer: caCert.subject,
    notBefore: new Date(now.getTime() - 60_000),
    notAfter,
    publicKey,
    signingKey: caKey.key,
    signingAlgorithm: caKey.algorithm,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(usagesOf(identity), false),
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: identityUri(identity) }]),
      await x509.AuthorityKeyIdentifierExtension.create(caCert, false, crypto),
    ],
  });
  return cert.toString("pem");
}

/** When a PEM certificate stops being valid, and whom it names. */
export function certificateFacts(certPem: string): {
  notBefore: Date;
  notAfter: Date;
  identity?: EngineIdentity;
} {
  const cert = new x509.X509Certificate(certPem);
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  const uris = (san?.names.items ?? []).filter((n) => n.type === "url").map((n) => `URI:${n.value}`);
  const identity = identityOfCertificate({ subjectaltname: uris.join(", ") });
  return { notBefore: cert.notBefore, notAfter: cert.notAfter, ...(identity ? { identity } : {}) };
}
