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
  /** Node plugin (server and client: nodes will also talk to each other). */
  node: TestCert;
  /** The controller's client certificate. */
  controller: TestCert;
  /** A client certificate from a different CA: must be refused. */
  stranger: TestCert;
}

/**
 * A throwaway PKI made with the openssl CLI: the engine CA, a node certificate valid for
 * 127.0.0.1/localhost, a controller certificate, and a certificate from an unrelated CA. EC P-256
 * keys keep generation well under a second.
 */
export function makeTestPki(dir: string): TestPki {
  const ca = makeCa(dir, "engine-ca");
  const other = makeCa(dir, "other-ca");
  return {
    node: issue(dir, ca, "node", "IP:127.0.0.1,DNS:localhost"),
    controller: issue(dir, ca, "controller", "DNS:snapblock-controller"),
    stranger: issue(dir, other, "stranger", "IP:127.0.0.1,DNS:localhost"),
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

function issue(dir: string, ca: { cert: string; key: string }, name: string, san: string): TestCert {
  const ext = path.join(dir, `${name}.ext`);
  writeFileSync(
    ext,
    `subjectAltName=${san}\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n`,
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
