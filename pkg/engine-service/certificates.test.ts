import { X509Certificate, webcrypto } from "node:crypto";
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { describe, expect, it } from "vitest";
import {
  certificateFacts,
  createCa,
  createKeyAndRequest,
  issueOwnCertificate,
  readRequest,
  signRequest,
} from "./certificates.js";
import { identityOfCertificate } from "./engine-identity.js";

describe("engine certificates", () => {
  it("signs a node's request into a certificate naming that node, server and client, chained to the CA", async () => {
    const ca = await createCa({ commonName: "test-engine-ca", days: 10 });
    const { keyPem, csrPem } = await createKeyAndRequest({ role: "node", nodeId: "node-a" });
    expect(keyPem).toMatch(/BEGIN PRIVATE KEY/);
    expect((await readRequest(csrPem)).identity).toEqual({ role: "node", nodeId: "node-a" });
    const certPem = await signRequest({ ca, csrPem, days: 5 });
    const cert = new X509Certificate(certPem);
    expect(cert.verify(new X509Certificate(ca.certPem).publicKey)).toBe(true);
    expect(identityOfCertificate({ subjectaltname: cert.subjectAltName ?? "" })).toEqual({
      role: "node",
      nodeId: "node-a",
    });
    expect(cert.keyUsage).toEqual(expect.arrayContaining(["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]));
    const facts = certificateFacts(certPem);
    const days = (facts.notAfter.getTime() - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(4.9);
    expect(days).toBeLessThan(5.1);
  });

  it("issues the controller a client-only certificate, never longer-lived than the CA", async () => {
    const ca = await createCa({ commonName: "test-engine-ca", days: 2 });
    const own = await issueOwnCertificate({ ca, identity: { role: "controller" }, days: 365 });
    const cert = new X509Certificate(own.certPem);
    expect(cert.keyUsage).toEqual(["1.3.6.1.5.5.7.3.2"]);
    expect(certificateFacts(own.certPem).identity).toEqual({ role: "controller" });
    expect(new Date(cert.validTo).getTime()).toBeLessThanOrEqual(
      new Date(new X509Certificate(ca.certPem).validTo).getTime(),
    );
  });

  it("refuses requests that name anything but exactly one identity, or use another key type", async () => {
    const keys = await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ]);
    const make = async (names: x509.JsonGeneralName[], k: webcrypto.CryptoKeyPair = keys): Promise<string> =>
      (
        await x509.Pkcs10CertificateRequestGenerator.create({
          name: "CN=x",
          keys: k as never,
          signingAlgorithm: k === keys ? { name: "ECDSA", hash: "SHA-256" } : { name: "RSASSA-PKCS1-v1_5" },
          extensions: [new x509.SubjectAlternativeNameExtension(names)],
        })
      ).toString("pem");
    await expect(
      readRequest(
        await make([
          { type: "url", value: "snapblock://node/a" },
          { type: "url", value: "snapblock://controller" },
        ]),
      ),
    ).rejects.toThrow(/exactly one subject alternative name/);
    await expect(
      readRequest(
        await make([
          { type: "url", value: "snapblock://node/a" },
          { type: "dns", value: "evil" },
        ]),
      ),
    ).rejects.toThrow(/exactly one/);
    await expect(readRequest(await make([{ type: "dns", value: "node-a" }]))).rejects.toThrow(/exactly one/);
    const rsa = await webcrypto.subtle.generateKey(
      {
        name: "RSASSA-PKCS1-v1_5",
        modulusLength: 2048,
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: "SHA-256",
      },
      true,
      ["sign", "verify"],
    );
    await expect(
      readRequest(await make([{ type: "url", value: "snapblock://node/a" }], rsa)),
    ).rejects.toThrow(/ECDSA P-256/);
    await expect(
      readRequest("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"),
    ).rejects.toThrow(/PKCS#10/);
  });
});
