/**
 * Architecture rules checked in CI (DESIGN.md section 5):
 * - no import cycles anywhere;
 * - the engine and the NBD server import no gRPC, Kubernetes or Prometheus library;
 * - a module is entered only through its index.ts (pkg/<module>/index.ts);
 * - only cmd/ wires concrete pieces: nothing under pkg/ imports from cmd/.
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
      comment: "cmd/, test/ and bench/ reach pkg/<module> only through its index.ts.",
      from: { path: "^(cmd|test|bench)/" },
      to: { path: "^pkg/[^/]+/", pathNot: "^pkg/[^/]+/index\\.ts$" },
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
