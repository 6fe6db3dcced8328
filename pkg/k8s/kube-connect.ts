import type { KubeApi } from "./kube-api.js";

/**
 * The Kubernetes API client, loaded on first use: @kubernetes/client-node takes hundreds of
 * milliseconds to import, which static discovery, local mode and the CLI should not pay.
 */
export async function connectKube(): Promise<KubeApi> {
  const { KubeClient } = await import("./kube-client.js");
  return new KubeClient();
}
