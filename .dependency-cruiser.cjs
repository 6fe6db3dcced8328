/**
 * Architecture rules checked in CI (docs/design.md section 5):
 * - no import cycles anywhere;
 * - the engine and the NBD server import no gRPC, Kubernetes or Prometheus library;
 * - a module is entered only through its index.ts (pkg/<module>/index.ts);
 * - only cmd/ wires concrete pieces: nothing under pkg/ imports from cmd/;
 * - the import arrows between modules point one way (docs/design.md, "Modules"):
 *     errors, log, files, streams <- rpc <- csi, engine-service
 *     engine <- engine-api <- csi (the interface only), engine-service, cluster, node
 *     engine-service <- cluster <- k8s
 *     attach, mount, nbd <- node <- dataplane (the transport between a node's two processes)
 *   so pkg/csi never reaches the engine, NBD, attach or mount internals, and only pkg/k8s talks
 *   to Kubernetes.
 */
module.exports = {
  forbidden: [
    {
      name: "no-circular",
      severity: "error",
      comment: "Import cycles make module boundaries meaningless.",
      from: {},
      to: { circular: true },
    },
    {
      name: "data-path-stays-pure",
      severity: "error",
      comment: "pkg/engine and pkg/nbd must not depend on gRPC, Kubernetes or Prometheus.",
      from: { path: "^pkg/(engine|nbd)/" },
      to: { path: "(^|node_modules/)(@grpc/|@kubernetes/|prom-client)" },
    },
    {
      name: "no-unresolvable",
      severity: "error",
      comment: "Every import must resolve (a missing dependency in package.json, a typo).",
      from: {},
      to: { couldNotResolve: true },
    },
    {
      name: "enter-modules-through-index",
      severity: "error",
      comment: "Other modules reach pkg/<module> only through pkg/<module>/index.ts.",
      from: { path: "^(pkg/[^/]+)/" },
      to: { path: "^pkg/[^/]+/", pathNot: ["^$1/", "^pkg/[^/]+/index\\.ts$"] },
    },
    {
      name: "outside-code-enters-modules-through-index",
      severity: "error",
      comment: "cmd/, test/, bench/ and hack/ reach pkg/<module> only through its index.ts.",
      from: { path: "^(cmd|test|bench|hack)/" },
      to: { path: "^pkg/[^/]+/", pathNot: "^pkg/[^/]+/index\\.ts$" },
    },
    {
      name: "csi-knows-only-the-engine-interface",
      severity: "error",
      comment:
        "pkg/csi speaks CSI over the EngineApi and NodeVolumeManager interfaces; the engine, NBD, block devices, mounts, the engine service and Kubernetes are behind them.",
      from: { path: "^pkg/csi/" },
      to: { path: "^pkg/(engine|nbd|attach|mount|node|dataplane|engine-service|cluster|k8s|metrics)/" },
    },
    {
      name: "dataplane-service-is-transport-only",
      severity: "error",
      comment:
        "pkg/dataplane carries NodeDataPlane calls between a node's two processes; what the data plane does (exports, devices, mounts) is pkg/node's, and CSI sits above it.",
      from: { path: "^pkg/dataplane/" },
      to: { path: "^pkg/(csi|engine|nbd|mount|cluster|k8s|metrics)/" },
    },
    {
      name: "node-knows-no-transport",
      severity: "error",
      comment: "pkg/node defines NodeDataPlane; the gRPC transport of it (pkg/dataplane) sits above.",
      from: { path: "^pkg/node/" },
      to: { path: "^pkg/(dataplane|engine-service)/" },
    },
    {
      name: "engine-api-below-the-services",
      severity: "error",
      comment: "The engine interface and LocalEngine know no service that uses them.",
      from: { path: "^pkg/engine-api/" },
      to: {
        path: [
          "^pkg/(csi|nbd|attach|mount|node|engine-service|cluster|k8s|metrics|rpc)/",
          "(^|node_modules/)(@grpc/|@kubernetes/|prom-client)",
        ],
      },
    },
    {
      name: "engine-service-is-transport-only",
      severity: "error",
      comment: "The engine service carries EngineApi calls; placement, CSI and Kubernetes sit above it.",
      from: { path: "^pkg/engine-service/" },
      to: { path: "^pkg/(csi|cluster|k8s|node|nbd|attach|mount|metrics)/" },
    },
    {
      name: "cluster-does-not-know-kubernetes",
      severity: "error",
      comment: "pkg/cluster defines the interfaces (NodeDiscovery, EventRecorder) that pkg/k8s implements.",
      from: { path: "^pkg/cluster/" },
      to: { path: ["^pkg/(csi|k8s|node|nbd|attach|mount|metrics)/", "(^|node_modules/)@kubernetes/"] },
    },
    {
      name: "only-k8s-talks-to-kubernetes",
      severity: "error",
      from: { path: "^pkg/", pathNot: "^pkg/k8s/" },
      to: { path: "(^|node_modules/)@kubernetes/" },
    },
    {
      name: "foundations-stay-at-the-bottom",
      severity: "error",
      comment:
        "errors, log, files, streams and rpc are used by every module and use none of them but each other.",
      from: { path: "^pkg/(errors|log|files|streams|rpc)/" },
      to: { path: "^pkg/", pathNot: "^pkg/(errors|log|files|streams|rpc)/" },
    },
    {
      name: "pkg-does-not-import-cmd",
      severity: "error",
      from: { path: "^pkg/" },
      to: { path: "^cmd/" },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: { extensions: [".ts", ".js"] },
  },
};
