import { createHash } from "node:crypto";
import { promises as fs, readFileSync } from "node:fs";
import path from "node:path";
import { SnapblockError, asSnapblockError } from "../errors/index.js";
import { writeFileAtomically } from "../files/index.js";
import {
  certificateFacts,
  createKeyAndRequest,
  type TlsMaterial,
  type TlsPem,
} from "../engine-service/index.js";
import type { Logger } from "../log/index.js";
import { ENGINE_SIGNER } from "./csr-signer.js";
import type { KubeApi } from "./kube-api.js";

export interface NodeCertificateOptions {
  api: KubeApi;
  nodeId: string;
  /** Where the node keeps its key and certificate (created 0700; the key is 0600). */
  dir: string;
  /** The engine CA's certificate (PEM file mounted from the CA ConfigMap). */
  caFile: string;
  /** Lifetime asked for, in days (the signer may give less). */
  days: number;
  /** How long to wait for the signer (default 5 minutes). */
  waitMs?: number;
  logger: Logger;
  now?: () => Date;
  /** Poll interval while waiting for the signer (default 2 s; tests shorten it). */
  pollMs?: number;
}

const KEY = "engine.key";
const CERT = "engine.crt";

/**
 * A node plugin's own engine-service certificate, obtained from the controller's signer through
 * a CertificateSigningRequest (csr-signer.ts) and renewed when a third of its life is left. The
 * private key is made on the node and never leaves it; the certificate is kept beside it so a
 * restarted plugin serves at once.
 */
export class NodeCertificate implements TlsMaterial {
  readonly describe: string;
  private pem: { cert: Buffer; key: Buffer } | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly o: NodeCertificateOptions) {
    this.describe = `the node certificate in ${path.join(o.dir, CERT)}`;
  }

  current(): TlsPem {
    if (!this.pem) throw new SnapblockError("CLOSED", "the node's engine certificate is not there yet");
    return { ca: readCa(this.o.caFile), ...this.pem };
  }

  /** Loads a kept certificate that is still good, or asks the signer for a new one. */
  async ensure(): Promise<void> {
    const kept = await this.load();
    if (kept && !this.dueForRenewal(kept.cert)) {
      this.pem = kept;
      return;
    }
    this.pem = await this.request();
  }

  /** Checks every `everyMs` and renews when due; `onRenewed` lets the server reload its context. */
  startRenewal(onRenewed: () => void, everyMs = 3_600_000): void {
    this.timer = setInterval(() => {
      if (!this.pem || !this.dueForRenewal(this.pem.cert)) return;
      this.request().then(
        (pem) => {
          this.pem = pem;
          onRenewed();
        },
        (err: unknown) =>
          this.o.logger.error("renewing the node's engine certificate failed; will retry", { err }),
      );
    }, everyMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  private now(): Date {
    return this.o.now?.() ?? new Date();
  }

  private dueForRenewal(certPem: Buffer): boolean {
    const facts = certificateFacts(certPem.toString("utf8"));
    const right = facts.identity?.role === "node" && facts.identity.nodeId === this.o.nodeId;
    const life = facts.notAfter.getTime() - facts.notBefore.getTime();
    return !right || facts.notAfter.getTime() - this.now().getTime() < life / 3;
  }

  private async load(): Promise<{ cert: Buffer; key: Buffer } | undefined> {
    try {
      return {
        cert: await fs.readFile(path.join(this.o.dir, CERT)),
        key: await fs.readFile(path.join(this.o.dir, KEY)),
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw asSnapblockError(err, `reading ${this.describe}`);
    }
  }

  private async request(): Promise<{ cert: Buffer; key: Buffer }> {
    const identity = { role: "node" as const, nodeId: this.o.nodeId };
    const { keyPem, csrPem } = await createKeyAndRequest(identity);
    // Kubernetes object names: lower case; the hash keeps each request's name unique.
    const digest = createHash("sha256").update(csrPem).digest("hex").slice(0, 10);
    const name = `snapblock-${this.o.nodeId.toLowerCase().replace(/[^a-z0-9.-]/g, "-")}-${digest}`;
    await this.o.api.createCsr({
      name,
      signerName: ENGINE_SIGNER,
      requestPem: csrPem,
      usages: ["digital signature", "server auth", "client auth"],
      expirationSeconds: Math.round(this.o.days * 86_400),
    });
    this.o.logger.info("asked the controller's signer for this node's engine certificate", { csr: name });
    const deadline = Date.now() + (this.o.waitMs ?? 300_000);
    for (;;) {
      const csr = await this.o.api.getCsr(name);
      if (csr?.denied || csr?.failed) {
        throw new SnapblockError(
          "INVALID_ARGUMENT",
          `the engine certificate request ${name} was ${csr.denied ? "denied" : "not signed"}: ${csr.message ?? "no reason given"}`,
        );
      }
      if (csr?.certificatePem) {
        const facts = certificateFacts(csr.certificatePem);
        if (facts.identity?.role !== "node" || facts.identity.nodeId !== this.o.nodeId) {
          throw new SnapblockError(
            "INTERNAL",
            `the certificate issued for ${name} does not name node ${this.o.nodeId}`,
          );
        }
        await fs.mkdir(this.o.dir, { recursive: true, mode: 0o700 });
        await writeFileAtomically(path.join(this.o.dir, KEY), keyPem, { what: "node engine key" });
        await writeFileAtomically(path.join(this.o.dir, CERT), csr.certificatePem, {
          what: "node engine certificate",
        });
        this.o.logger.info("got this node's engine certificate", {
          csr: name,
          notAfter: facts.notAfter.toISOString(),
        });
        return { cert: Buffer.from(csr.certificatePem), key: Buffer.from(keyPem) };
      }
      if (Date.now() > deadline) {
        throw new SnapblockError(
          "CLOSED",
          `no answer to the engine certificate request ${name}: is the snapblock controller running with --sign-node-certificates?`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, this.o.pollMs ?? 2000));
    }
  }
}

function readCa(file: string): Buffer {
  try {
    // Read each time: the CA ConfigMap's mounted file follows updates.
    return readFileSync(file);
  } catch (err) {
    throw asSnapblockError(err, `reading the engine CA certificate ${file}`);
  }
}
