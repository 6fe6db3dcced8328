import { describe, expect, it } from "vitest";
import { CONTROLLER_VERB, controllerConfig } from "./controller-config.js";
import { DATAPLANE_VERB, dataplaneConfig } from "./dataplane-config.js";
import { LOCAL_VERB, localConfig } from "./local-config.js";
import { NODE_VERB, nodeConfig } from "./node-config.js";
import { helpText, parseVerb } from "./verb-spec.js";

const local = (...args: string[]) => localConfig(parseVerb(LOCAL_VERB, args).values, "/work");
const node = (...args: string[]) => nodeConfig(parseVerb(NODE_VERB, args).values, "/work");
const dataplane = (...args: string[]) => dataplaneConfig(parseVerb(DATAPLANE_VERB, args).values, "/work");
const controller = (env: NodeJS.ProcessEnv, ...args: string[]) =>
  controllerConfig(parseVerb(CONTROLLER_VERB, args).values, { cwd: "/work", env, hostname: "host-1" });
const refusal = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    return (err as Error).message;
  }
  return "accepted";
};

describe("snapblock local flags", () => {
  it("has defaults relative to the working directory", () => {
    expect(local()).toEqual({
      dataDir: "/work/snapblock-data",
      socketPath: "/work/snapblock-data/csi.sock",
      nodeId: "local",
      poolSize: undefined,
      chunkSize: undefined,
      overcommit: 1,
      pathRoots: [],
      maxVolumes: 0,
      attach: "auto",
      nbdDeadConnTimeoutSeconds: 120,
      dataIo: "buffered",
      deviceSeries: 100,
      pluginName: "csi.snapblock.dev",
      metricsAddress: { host: "127.0.0.1", port: 9808 },
      logLevel: "info",
      graceMs: 30_000,
      attachDir: "/work/snapblock-data/attached",
      exportDir: "/work/snapblock-data/exports",
    });
  });

  it("reads every flag", () => {
    expect(
      local(
        "--data",
        "d",
        "--endpoint",
        "unix:///run/x.sock",
        "--pool-size",
        "2G",
        "--chunk-size",
        "128K",
        "--overcommit",
        "2.5",
        "--path-root",
        "a",
        "--path-root",
        "/b",
        "--attach",
        "none",
        "--data-io",
        "direct",
        "--metrics-address",
        "none",
        "--shutdown-grace",
        "0",
      ),
    ).toMatchObject({
      dataDir: "/work/d",
      socketPath: "/run/x.sock",
      poolSize: 2 * 2 ** 30,
      chunkSize: 128 * 1024,
      overcommit: 2.5,
      pathRoots: ["/work/a", "/b"],
      attach: "none",
      dataIo: "direct",
      metricsAddress: undefined,
      graceMs: 0,
    });
  });

  it("refuses bad values with the flag's name", () => {
    expect(refusal(() => local("--overcommit", "0.5"))).toBe("--overcommit 0.5: a number >= 1");
    expect(refusal(() => local("--attach", "iscsi"))).toMatch(/^--attach iscsi: use auto/);
    expect(refusal(() => local("--data-io", "mmap"))).toBe("--data-io mmap: use buffered, direct or hybrid");
    for (const bad of ["0", "1.5", "86401", ""])
      expect(refusal(() => local("--nbd-dead-conn-timeout", bad))).toBe(
        `--nbd-dead-conn-timeout ${bad}: whole seconds from 1 to 86400`,
      );
    expect(dataplane("--node-id", "n1", "--nbd-dead-conn-timeout", "600").nbdDeadConnTimeoutSeconds).toBe(
      600,
    );
    expect(refusal(() => local("--max-volumes", "-1"))).toBe("--max-volumes -1: a whole number >= 0");
    expect(refusal(() => local("--shutdown-grace", "soon"))).toBe("--shutdown-grace soon: seconds >= 0");
    expect(refusal(() => local("--log-level", "loud"))).toMatch(/^--log-level loud: use debug, info/);
    expect(refusal(() => local("--pool-size", "big"))).toMatch(/^--pool-size "big" is not a size/);
    expect(refusal(() => local("--node-id", "a/b"))).toMatch(/^--node-id: node id "a\/b" is invalid/);
    expect(refusal(() => local("--metrics-address", "9808"))).toMatch(/^--metrics-address: .*HOST:PORT/);
    expect(refusal(() => local("--plugin-name", "-x"))).toMatch(
      /^--plugin-name: plugin name "-x" is invalid/,
    );
  });

  it("shows every flag and its default in --help", () => {
    const help = helpText(LOCAL_VERB);
    expect(help).toMatch(
      /--data DIR +data directory: pool, CSI metadata, sockets \(default snapblock-data\)/,
    );
    expect(help).toMatch(
      /--pool-size SIZE +size of a new pool \(default 80% of the free disk space, at most 64G\)/,
    );
    expect(help).toMatch(/--path-root DIR +only accept staging\/target paths inside DIR \(repeatable\)/);
  });
});

describe("snapblock node flags", () => {
  it("needs a node id; keeps the TLS flags for engine-tls-setup; reads the announcement and pull rate", () => {
    expect(refusal(() => node("--insecure-loopback"))).toMatch(/^--node-id is required/);
    expect(
      node(
        "--node-id",
        "n1",
        "--tls-ca",
        "ca.pem",
        "--tls-bootstrap",
        "--announce",
        "10.0.0.7:7443",
        "--pull-rate-limit",
        "50M",
      ),
    ).toMatchObject({
      nodeId: "n1",
      dataDir: "/var/lib/snapblock",
      engineListen: "0.0.0.0:7443",
      tls: { "tls-ca": "ca.pem", "tls-bootstrap": true, "insecure-loopback": false },
      announce: "10.0.0.7:7443",
      announceMs: 60_000,
      pullBytesPerSecond: 50 * 2 ** 20,
    });
    expect(node("--node-id", "n1", "--insecure-loopback").pullBytesPerSecond).toBe(0);
    expect(refusal(() => node("--node-id", "n1", "--insecure-loopback", "--announce", "nowhere"))).toMatch(
      /^--announce: /,
    );
    expect(refusal(() => node("--node-id", "n1", "--pull-rate-limit", "fast"))).toMatch(
      /^--pull-rate-limit "fast" is not a size/,
    );
  });
});

describe("snapblock node and dataplane flags, split", () => {
  it("makes the node a node plugin over a data plane socket, and gives the data plane its socket", () => {
    expect(node("--node-id", "n1").dataplaneSocket).toBeUndefined();
    expect(node("--node-id", "n1", "--dataplane-socket", "dp/s.sock").dataplaneSocket).toBe(
      "/work/dp/s.sock",
    );
    expect(dataplane("--node-id", "n1", "--data", "d")).toMatchObject({
      dataDir: "/work/d",
      dataplaneSocket: "/work/d/dataplane/dataplane.sock",
      socketPath: "/work/d/dataplane/dataplane.sock",
    });
    expect(dataplane("--node-id", "n1", "--socket", "/run/dp.sock").dataplaneSocket).toBe("/run/dp.sock");
    expect(refusal(() => dataplane("--node-id", "n1", "--socket", ""))).toMatch(/^--socket: give a path/);
    // The node plugin's own flags are not the data plane's.
    for (const flag of ["--endpoint", "--path-root", "--max-volumes", "--dataplane-socket"])
      expect(
        refusal(() => dataplane("--node-id", "n1", flag, "x")),
        flag,
      ).not.toBe("accepted");
  });
});

describe("snapblock controller flags", () => {
  it("needs exactly one node source", () => {
    expect(refusal(() => controller({}, "--insecure-loopback"))).toMatch(/exactly one of --nodes/);
    expect(
      refusal(() => controller({}, "--insecure-loopback", "--nodes", "a=h:1", "--kube-discovery")),
    ).toMatch(/exactly one of --nodes/);
    expect(refusal(() => controller({}, "--nodes", "a=h", "--insecure-loopback"))).toMatch(
      /^--nodes: .*host:port/,
    );
  });

  it("reads the node source, timings and the Lease", () => {
    expect(
      controller(
        { POD_NAMESPACE: "snapblock", POD_NAME: "ctl-0" },
        "--nodes-file",
        "nodes.txt",
        "--insecure-loopback",
        "--leader-elect",
        "--refresh",
        "5",
      ),
    ).toMatchObject({
      socketPath: "/csi/csi.sock",
      nodes: { kind: "file", file: "/work/nodes.txt" },
      refreshMs: 5000,
      callTimeoutMs: 60_000,
      tls: { "insecure-loopback": true },
      namespace: "snapblock",
      leaderElection: { name: "snapblock-controller", identity: "ctl-0" },
      lostAfterMs: 600_000,
      replicaCheckMs: 30_000,
    });
    expect(controller({}, "--kube-discovery", "--insecure-loopback", "--leader-elect")).toMatchObject({
      nodes: { kind: "kube" },
      namespace: "kube-system",
      leaderElection: { identity: "host-1" },
    });
    expect(
      refusal(() => controller({}, "--kube-discovery", "--insecure-loopback", "--call-timeout", "0")),
    ).toBe("--call-timeout 0: seconds > 0");
  });

  it("signs node certificates only with the CA key, for a service account given as NS/NAME", () => {
    const ca = ["--kube-discovery", "--tls-ca", "ca.pem", "--tls-ca-key", "ca.key"];
    expect(controller({ POD_NAMESPACE: "snapblock" }, ...ca, "--sign-node-certificates")).toMatchObject({
      tls: { "tls-ca": "ca.pem", "tls-ca-key": "ca.key" },
      signNodeCertificates: { serviceAccount: "system:serviceaccount:snapblock:snapblock-node", maxDays: 30 },
    });
    expect(
      refusal(() => controller({}, "--kube-discovery", "--insecure-loopback", "--sign-node-certificates")),
    ).toMatch(/need the CA: --tls-ca with --tls-ca-key/);
    expect(
      refusal(() => controller({}, ...ca, "--sign-node-certificates", "--node-service-account", "x")),
    ).toBe("--node-service-account x: use NAMESPACE/NAME");
  });
});
