/**
 * The PromQL queries of a Grafana dashboard (JSON model) and the metric names they read: the
 * dashboard test checks each one against the registry, and test/metrics checks that a real
 * Prometheus has data for each, so a renamed metric cannot leave an empty panel behind.
 */
export interface DashboardQuery {
  /** Panel title, or `$name` for a template variable. */
  panel: string;
  expr: string;
}

interface PanelJson {
  title?: string;
  targets?: Array<{ expr?: string }>;
  panels?: PanelJson[];
}

interface DashboardJson {
  panels?: PanelJson[];
  templating?: { list?: Array<{ name?: string; type?: string; query?: unknown }> };
}

export function dashboardQueries(dashboard: unknown): DashboardQuery[] {
  const d = dashboard as DashboardJson;
  const out: DashboardQuery[] = [];
  const visit = (panels: PanelJson[] | undefined): void => {
    for (const p of panels ?? []) {
      for (const t of p.targets ?? []) if (t.expr) out.push({ panel: p.title ?? "(untitled)", expr: t.expr });
      visit(p.panels);
    }
  };
  visit(d.panels);
  for (const v of d.templating?.list ?? []) {
    if (v.type !== "query") continue;
    const q = v.query;
    const expr = typeof q === "string" ? q : (q as { query?: string } | undefined)?.query;
    if (expr) out.push({ panel: `$${v.name ?? "?"}`, expr });
  }
  return out;
}

/** PromQL words that are not metric names (aggregation modifiers, set and binary operators). */
const KEYWORDS = new Set([
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "bool",
  "and",
  "or",
  "unless",
  "offset",
  "atan2",
  "inf",
  "nan",
]);

/** Metric names of a PromQL expression (or a Grafana label_values() query), in order, deduplicated. */
export function metricNamesOf(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""') // strings: label values, regexes
    .replace(/\{[^}]*\}/g, " ") // label matchers
    .replace(/\[[^\]]*\]/g, " ") // range and subquery durations
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ") // label lists
    .replace(/\$\{?\w+\}?/g, " ") // Grafana variables
    .replace(/\boffset\s+\S+/g, " ");
  const names: string[] = [];
  for (const m of stripped.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const word = m[0];
    const after = stripped.slice(m.index + word.length).trimStart();
    if (after.startsWith("(") || KEYWORDS.has(word.toLowerCase())) continue; // a function or keyword
    // label_values(metric, label): the second argument is a label name, not a metric.
    if (/,\s*$/.test(stripped.slice(0, m.index)) && /^label_values\(/.test(stripped.trimStart())) continue;
    if (/^\d/.test(word) || names.includes(word)) continue;
    names.push(word);
  }
  return names;
}
