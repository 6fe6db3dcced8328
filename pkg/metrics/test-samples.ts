import type { Registry } from "prom-client";

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * The samples of one metric as a scrape would show them (histograms expand to _bucket, _sum and
 * _count), for the unit tests of this module. Parses the exposition text rather than prom-client's
 * internals, so the tests check what Prometheus would read.
 */
export async function samples(registry: Registry, name: string): Promise<Sample[]> {
  const text = await registry.metrics();
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (match?.[1] !== name) continue;
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]!] = pair[2]!;
    }
    out.push({ name, labels, value: Number(match[3]) });
  }
  return out;
}

/** The value of the one sample whose labels include `labels`, or undefined if none. */
export async function sampleValue(
  registry: Registry,
  name: string,
  labels: Record<string, string> = {},
): Promise<number | undefined> {
  const found = (await samples(registry, name)).filter((s) =>
    Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  if (found.length > 1) throw new Error(`${name}: ${found.length} samples match ${JSON.stringify(labels)}`);
  return found[0]?.value;
}
