/**
 * pkg/dataplane: the data plane service (proto/dataplane.proto) between the two processes of a
 * node (docs/design.md, "Processes of a node"): the server over the data plane process's
 * NodeDataPlane (pkg/node LocalDataPlane) on an owner-only unix socket, and the client the CSI
 * node plugin uses as its NodeDataPlane. Transport only: what a data plane does is in pkg/node.
 * This is the module's only entry point.
 */
export { DataPlaneServer, type DataPlaneServerOptions } from "./dataplane-server.js";
export { DataPlaneClient, type DataPlaneClientOptions } from "./dataplane-client.js";
