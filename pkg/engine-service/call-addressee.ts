import { Metadata } from "@grpc/grpc-js";
import { StatusError } from "../errors/index.js";

/**
 * Every engine call names the node it is meant for. Volume ids carry their node, so a node list
 * that maps node-a to node-b's address would otherwise create "node-a/..." volumes in node-b's
 * pool: ids that lie about where the data is. The server refuses a call for another node.
 */
const ADDRESSEE_KEY = "snapblock-node-id";

export function addressedTo(nodeId: string): Metadata {
  const md = new Metadata();
  md.set(ADDRESSEE_KEY, nodeId);
  return md;
}

/** Throws FAILED_PRECONDITION when the call was meant for another node (no header: any node). */
export function checkAddressee(md: Metadata, servedNodeId: string): void {
  const wanted = md.get(ADDRESSEE_KEY)[0];
  refuseOtherAddressee(typeof wanted === "string" ? wanted : undefined, servedNodeId);
}

/** The same check for a request that names its node itself (the chunk channel's). */
export function refuseOtherAddressee(wanted: string | undefined, servedNodeId: string): void {
  if (wanted !== undefined && wanted !== servedNodeId) {
    throw new StatusError(
      "FAILED_PRECONDITION",
      `the engine service at this address serves node ${servedNodeId}, not ${wanted}: fix the controller's node list`,
    );
  }
}
