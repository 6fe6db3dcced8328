import { readFile } from "node:fs/promises";
import { SnapblockError, asSnapblockError } from "../errors/index.js";
import { validateNodeId } from "../engine-api/index.js";
import { parseHostPort } from "../engine-service/index.js";

/** A node plugin's engine service, as discovery knows it. */
export interface NodeEndpoint {
  nodeId: string;
  /** "host:port" of its engine service. */
  address: string;
}

/**
 * Which node engines exist. The controller asks again from time to time (nodes join and leave);
 * implementations: a static list (flag or file: tests, clusters that want it) and Kubernetes
 * Node objects.
 */
export interface NodeDiscovery {
  nodes(): Promise<NodeEndpoint[]>;
}

/** A fixed list, e.g. from --nodes node-a=10.0.0.1:7443,node-b=10.0.0.2:7443. */
export class StaticNodeDiscovery implements NodeDiscovery {
  private readonly list: NodeEndpoint[];

  constructor(nodes: NodeEndpoint[]) {
    this.list = checkEndpoints(nodes);
  }

  nodes(): Promise<NodeEndpoint[]> {
    return Promise.resolve(this.list.map((n) => ({ ...n })));
  }
}

/**
 * "node-a=host:port,node-b=host:port" (commas or newlines; # starts a comment in a file), the
 * format of --nodes and of --nodes-file.
 */
export function parseNodeList(text: string, where: string): NodeEndpoint[] {
  const entries = text
    .split(/[,\n]/)
    .map((line) => line.replace(/#.*/, "").trim())
    .filter((line) => line !== "");
  return checkEndpoints(
    entries.map((entry) => {
      const eq = entry.indexOf("=");
      if (eq <= 0) {
        throw new SnapblockError(
          "INVALID_ARGUMENT",
          `${where}: ${JSON.stringify(entry)} is not node-id=host:port`,
        );
      }
      return { nodeId: entry.slice(0, eq).trim(), address: entry.slice(eq + 1).trim() };
    }),
    where,
  );
}

/** A static list read from a file whenever discovery is asked (edit the file to add a node). */
export class FileNodeDiscovery implements NodeDiscovery {
  constructor(private readonly file: string) {}

  async nodes(): Promise<NodeEndpoint[]> {
    let text: string;
    try {
      text = await readFile(this.file, "utf8");
    } catch (err) {
      throw asSnapblockError(err, `reading the node list ${this.file}`);
    }
    return parseNodeList(text, this.file);
  }
}

function checkEndpoints(nodes: NodeEndpoint[], where = "node list"): NodeEndpoint[] {
  const seen = new Set<string>();
  for (const n of nodes) {
    validateNodeId(n.nodeId);
    parseHostPort(n.address);
    if (seen.has(n.nodeId))
      throw new SnapblockError("INVALID_ARGUMENT", `${where}: node ${n.nodeId} is listed twice`);
    seen.add(n.nodeId);
  }
  return nodes;
}
