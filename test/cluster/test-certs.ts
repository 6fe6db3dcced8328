import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";

/** File paths of one certificate signed by a test CA. */
export interface TestCert {
  caFile: string;
  certFile: string;
  keyFile: string;
}

export interface TestPki {
  /** A node's certificate (snapblock://node/<id>): server and client (node-to-node copies). */
  node(nodeId: string): TestCert;
  /** The controller's certificate (snapblock://controller), client only. */
  controller: TestCert;
  /** A client certificate from a different CA: must be refused in the handshake. */
  stranger: TestCert;
  /** From the engine CA, but naming no snapblock identity: must be refused every call. */
  anonymous: TestCert;
  /** From the engine CA, naming node `nodeId`, issued for `usage`. */
  issue(name: string, san: string, usage: "serverAuth" | "clientAuth" | "serverAuth,clientAuth"): TestCert;
}

/**
 * A throwaway PKI made with the openssl CLI: the engine CA, node certificates naming their node
 * (URI SAN snapblock://node/<id>, plus 127.0.0.1/localhost), the controller's client-only
 * certificate, and certificates a server must refuse. EC P-256 keys keep generation fast; node
 * certificates are made on first use and cached.
 */
export function makeTestPki(dir: string): TestPki {
  const ca = makeCa(dir, "engine-ca");
  const other = makeCa(dir, "other-ca");
  const nodes = new Map<string, TestCert>();
  return {
    node(nodeId) {
      let cert = nodes.get(nodeId);
      if (!cert) {
        cert = issue(
          dir,
          ca,
          `node-${nodeId}`,
          `URI:snapblock://node/${nodeId},IP:127.0.0.1,DNS:localhost`,
          "serverAuth,clientAuth",
        );
        nodes.set(nodeId, cert);
      }
      return cert;
    },
    controller: issue(dir, ca, "controller", "URI:snapblock://controller", "clientAuth"),
    stranger: issue(dir, other, "stranger", "URI:snapblock://controller", "serverAuth,clientAuth"),
    anonymous: issue(dir, ca, "anonymous", "DNS:localhost", "serverAuth,clientAuth"),
    issue: (name, san, usage) => issue(dir, ca, name, san, usage),
  };
}

function openssl(dir: string, args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
}

function makeCa(dir: string, name: string): { cert: string; key: string } {
  openssl(dir, [
    ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
    ...["-keyout", `${name}.key`, "-out", `${name}.crt`, "-days", "2", "-subj", `/CN=${name}`],
    ...["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
  ]);
  return { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
}

function issue(
  dir: string,
  ca: { cert: string; key: string },
  name: string,
  san: string,
  usage: string,
): TestCert {
  const ext = path.join(dir, `${name}.ext`);
  writeFileSync(
    ext,
    `subjectAltName=${san}\nextendedKeyUsage=${usage}\nkeyUsage=critical,digitalSignature\n`,
  );
  openssl(dir, [
    ...["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
    ...["-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`],
  ]);
  openssl(dir, [
    ...["x509", "-req", "-in", `${name}.csr`, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial"],
    ...["-out", `${name}.crt`, "-days", "2", "-extfile", ext],
  ]);
  return { caFile: ca.cert, certFile: path.join(dir, `${name}.crt`), keyFile: path.join(dir, `${name}.key`) };
}
