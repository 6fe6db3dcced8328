import { writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";

/** An Event as the controller posted it (the fields the tests read). */
export interface PostedEvent {
  namespace: string;
  type: string;
  reason: string;
  message: string;
  involvedObject: { kind: string; name: string; namespace?: string };
}

/**
 * Just enough of a Kubernetes API server, over plain HTTP on loopback, for the controller's
 * --pin-exported-points: it lists the VolumeSnapshotContents in `contents` (raw objects, as the
 * API returns them) and keeps the Events posted. Everything else is 404. `kubeconfig` is a file
 * for KUBECONFIG that points the real client (@kubernetes/client-node) at it (which refuses plain
 * HTTP unless told to skip TLS verification).
 */
export interface FakeApiServer {
  contents: Map<string, object>;
  events: PostedEvent[];
  /** Paths of the requests, with their query. */
  requests: string[];
  kubeconfig: string;
  close(): Promise<void>;
}

export async function startFakeApiServer(dir: string): Promise<FakeApiServer> {
  const contents = new Map<string, object>();
  const events: PostedEvent[] = [];
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    const url = req.url ?? "";
    requests.push(`${req.method} ${url}`);
    const answer = (status: number, body: object) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (
      req.method === "GET" &&
      url.split("?")[0] === "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents"
    ) {
      answer(200, {
        apiVersion: "snapshot.storage.k8s.io/v1",
        kind: "VolumeSnapshotContentList",
        metadata: { resourceVersion: "1" },
        items: [...contents.values()],
      });
      return;
    }
    const event = /^\/api\/v1\/namespaces\/([^/]+)\/events$/.exec(url);
    if (req.method === "POST" && event) {
      let body = "";
      req.setEncoding("utf8").on("data", (chunk: string) => (body += chunk));
      req.on("end", () => {
        const posted = JSON.parse(body) as Omit<PostedEvent, "namespace">;
        events.push({ ...posted, namespace: event[1]! });
        answer(201, posted);
      });
      return;
    }
    answer(404, { kind: "Status", apiVersion: "v1", status: "Failure", reason: "NotFound", code: 404 });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const kubeconfig = path.join(dir, "kubeconfig");
  writeFileSync(
    kubeconfig,
    JSON.stringify({
      apiVersion: "v1",
      kind: "Config",
      clusters: [
        { name: "fake", cluster: { server: `http://127.0.0.1:${port}`, "insecure-skip-tls-verify": true } },
      ],
      users: [{ name: "fake", user: {} }],
      contexts: [{ name: "fake", context: { cluster: "fake", user: "fake" } }],
      "current-context": "fake",
    }),
  );
  return {
    contents,
    events,
    requests,
    kubeconfig,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
