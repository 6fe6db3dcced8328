import { isSnapblockError } from "../errors/index.js";
import type { KubeApi, KubeLease } from "./kube-api.js";
import type { Logger } from "../log/index.js";

export interface LeaseElectionOptions {
  api: KubeApi;
  namespace: string;
  /** Lease name, e.g. "snapblock-controller". */
  name: string;
  /** This replica (pod name). */
  identity: string;
  /** How long a leader's claim lasts without renewal (default 15 s, as client-go). */
  leaseDurationMs?: number;
  /** How often to try to acquire or renew (default 2 s). */
  retryPeriodMs?: number;
  logger: Logger;
  now?: () => Date;
  onStartedLeading?: () => void;
  onStoppedLeading?: () => void;
}

/**
 * Leader election with a coordination.k8s.io/v1 Lease, the client-go algorithm: the holder
 * renews renewTime every retry period; another replica takes the Lease over only once
 * renewTime + leaseDuration has passed; every write carries the resourceVersion it read, so two
 * replicas racing for an expired Lease cannot both win (the loser gets a conflict). A leader that
 * cannot renew for a whole lease duration steps down before anyone else can take over.
 */
export class LeaseElection {
  private leading = false;
  private lastRenew = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly o: LeaseElectionOptions) {}

  isLeader(): boolean {
    return this.leading;
  }

  private get durationMs(): number {
    return this.o.leaseDurationMs ?? 15_000;
  }

  private now(): Date {
    return this.o.now?.() ?? new Date();
  }

  /** One round: acquire or renew; returns whether this replica leads afterwards. */
  async tryAcquireOrRenew(): Promise<boolean> {
    const now = this.now();
    let won = false;
    try {
      won = await this.attempt(now);
    } catch (err) {
      if (!isSnapblockError(err, "BUSY") && !isSnapblockError(err, "ALREADY_EXISTS")) {
        this.o.logger.warn("leader election round failed", { lease: this.o.name, err });
      }
    }
    if (won) this.lastRenew = now.getTime();
    // Keep leading through a failed round, but never past our own lease: by then another
    // replica may legitimately take over.
    const leading = won || (this.leading && now.getTime() - this.lastRenew < this.durationMs);
    this.setLeading(leading);
    return leading;
  }

  private async attempt(now: Date): Promise<boolean> {
    const { api, namespace, name, identity } = this.o;
    const seconds = Math.ceil(this.durationMs / 1000);
    const current = await api.getLease(namespace, name);
    if (!current) {
      await api.createLease({
        name,
        namespace,
        holderIdentity: identity,
        leaseDurationSeconds: seconds,
        acquireTime: now,
        renewTime: now,
        leaseTransitions: 0,
      });
      return true;
    }
    const held = current.holderIdentity !== undefined && current.holderIdentity !== "";
    if (held && current.holderIdentity !== identity && !expired(current, now, this.durationMs)) return false;
    const takeover = current.holderIdentity !== identity;
    const next: KubeLease = {
      ...current,
      holderIdentity: identity,
      leaseDurationSeconds: seconds,
      renewTime: now,
      ...(takeover ? { acquireTime: now, leaseTransitions: (current.leaseTransitions ?? 0) + 1 } : {}),
    };
    await api.replaceLease(next);
    return true;
  }

  /** Runs rounds every retry period until stop(). */
  start(): Promise<boolean> {
    this.timer = setInterval(() => void this.tryAcquireOrRenew(), this.o.retryPeriodMs ?? 2000);
    this.timer.unref();
    return this.tryAcquireOrRenew();
  }

  /** Stops and, when leading, releases the Lease so a successor need not wait for it to expire. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    if (!this.leading) return;
    try {
      const current = await this.o.api.getLease(this.o.namespace, this.o.name);
      if (current?.holderIdentity === this.o.identity) {
        await this.o.api.replaceLease({ ...current, holderIdentity: "", renewTime: this.now() });
      }
    } catch (err) {
      this.o.logger.warn("releasing the leader Lease failed; it will expire", { lease: this.o.name, err });
    }
    this.setLeading(false);
  }

  private setLeading(leading: boolean): void {
    if (leading === this.leading) return;
    this.leading = leading;
    this.o.logger.info(leading ? "became leader" : "stopped leading", {
      lease: this.o.name,
      identity: this.o.identity,
    });
    if (leading) this.o.onStartedLeading?.();
    else this.o.onStoppedLeading?.();
  }
}

function expired(lease: KubeLease, now: Date, fallbackMs: number): boolean {
  if (!lease.renewTime) return true;
  const durationMs = lease.leaseDurationSeconds ? lease.leaseDurationSeconds * 1000 : fallbackMs;
  return lease.renewTime.getTime() + durationMs <= now.getTime();
}
