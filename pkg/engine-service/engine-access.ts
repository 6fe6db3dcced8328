import { describeIdentity, permissionDenied, type EngineIdentity } from "./engine-identity.js";

/**
 * Who may call what on a node's engine service (docs/cluster.md, "TLS and identities"):
 *
 * - "controller": only the controller. Everything that creates, deletes, lists or sizes data is
 *   the controller's: a node never needs to change or even see another node's volumes.
 * - "pull": a node, for exactly the snapshots the controller has asked it to copy (cross-node
 *   restore, replicas): the serving node keeps the grants (PullGrants). The controller itself
 *   never needs data.
 * - "any": every authenticated caller (GetNodeInfo: which node this is, is it ready).
 *
 * A certificate that names no identity is refused everything. Without TLS (plaintext on
 * loopback, for tests on one machine) there are no identities and no checks.
 */
export type Access = "controller" | "pull" | "any";

/** Pull grants a node's engine holds: may node `nodeId` read snapshot `snapshot` here? */
export interface PullGrants {
  allows(snapshot: string, nodeId: string): boolean | Promise<boolean>;
}

export interface CallerCheck {
  /** undefined: plaintext transport, nothing to check. */
  tls: boolean;
  identity: EngineIdentity | undefined;
}

/** Throws PERMISSION_DENIED unless the caller may make this call. */
export async function authorize(
  access: Access,
  caller: CallerCheck,
  what: { method: string; snapshot?: string },
  grants: PullGrants | undefined,
): Promise<void> {
  if (!caller.tls) return;
  const { identity } = caller;
  if (!identity)
    throw permissionDenied(identity, `call ${what.method} (its certificate names no snapblock identity)`);
  if (access === "any") return;
  if (access === "controller") {
    if (identity.role !== "controller")
      throw permissionDenied(identity, `call ${what.method}: only the controller may`);
    return;
  }
  if (identity.role !== "node")
    throw permissionDenied(identity, `call ${what.method}: only nodes copying data may`);
  const allowed =
    what.snapshot !== undefined &&
    grants !== undefined &&
    (await grants.allows(what.snapshot, identity.nodeId));
  if (!allowed) {
    throw permissionDenied(
      identity,
      `read snapshot ${JSON.stringify(what.snapshot ?? "")}: the controller has not asked ${describeIdentity(identity)} to copy it`,
    );
  }
}
