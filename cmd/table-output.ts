/** Output of the operator CLI: aligned tables for people, JSON for scripts (--json). */
export interface Output {
  json: boolean;
  write(text: string): void;
}

export function printTable(out: Output, headers: string[], rows: string[][]): void {
  if (rows.length === 0) {
    out.write("(none)\n");
    return;
  }
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  out.write(`${line(headers)}\n`);
  for (const row of rows) out.write(`${line(row)}\n`);
}

export function printJson(out: Output, value: unknown): void {
  out.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** "key: value" lines for one object (get commands). */
export function printFields(out: Output, fields: Array<[string, string]>): void {
  const width = Math.max(...fields.map(([k]) => k.length));
  for (const [k, v] of fields) out.write(`${`${k}:`.padEnd(width + 2)}${v}\n`);
}
