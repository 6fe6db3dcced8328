import type { Metric, Registry } from "prom-client";

/** Label values of one series, by label name. */
export type Labels = Record<string, string>;

/** One counter series: the hot path adds to `value`. */
export interface CounterSeries {
  value: number;
}

/** One histogram series: the hot path calls observe(). */
export interface HistogramSeries {
  observe(value: number): void;
}

interface Sample {
  value: number;
  labels: Labels;
  metricName?: string;
  sharedLabels?: Labels;
}

interface Exported {
  name: string;
  help: string;
  type: "counter" | "histogram";
  values: Sample[];
  aggregator: "sum";
}

/**
 * Counters and histograms for the data path, exposed in prom-client's registry like its own.
 * A request adds plain numbers to a series it got once (series(labels)); the registry reads the
 * totals when Prometheus scrapes. prom-client's inc() and observe() validate and hash the label
 * object on every call: with ten such calls a request, the metrics cost a 4 KiB request about as
 * much CPU as the engine's own work for it (BENCHMARKS.md). Same names, types, labels and text
 * as prom-client's Counter and Histogram; `remove` and `reset` as theirs.
 */
abstract class TallyMetric<S> {
  readonly aggregator = "sum" as const;
  private readonly all = new Map<string, { labels: Labels; series: S }>();

  protected constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
    registers: readonly Registry[],
  ) {
    // The registry serialises any object with name, help, type and get(); its TypeScript type
    // names only prom-client's own classes.
    for (const r of registers) r.registerMetric(this as unknown as Metric);
  }

  protected abstract create(): S;
  protected abstract samples(labels: Labels, series: S): Sample[];
  abstract readonly type: "counter" | "histogram";

  /** The series of these label values, made on first use: hold it and add to it. */
  series(labels: Labels): S {
    const key = this.keyOf(labels);
    let entry = this.all.get(key);
    if (entry === undefined) {
      entry = { labels: { ...labels }, series: this.create() };
      this.all.set(key, entry);
    }
    return entry.series;
  }

  /** Drops the series of exactly these label values (a holder of it adds to nothing from now). */
  remove(labels: Labels): void {
    this.all.delete(this.keyOf(labels));
  }

  reset(): void {
    this.all.clear();
  }

  /** The registry's text exposition reads this (histogram buckets keep `le` apart, first). */
  getForPromString(): Promise<Exported> {
    const values: Sample[] = [];
    for (const { labels, series } of this.all.values()) values.push(...this.samples(labels, series));
    return Promise.resolve({
      name: this.name,
      help: this.help,
      type: this.type,
      values,
      aggregator: this.aggregator,
    });
  }

  /** The registry's JSON reads this: every sample's labels in one object. */
  async get(): Promise<Exported> {
    const out = await this.getForPromString();
    out.values = out.values.map(({ sharedLabels, labels, ...rest }) => ({
      ...rest,
      labels: { ...labels, ...sharedLabels },
    }));
    return out;
  }

  private keyOf(labels: Labels): string {
    let key = "";
    for (const name of this.labelNames) {
      const v = labels[name];
      if (v === undefined) throw new Error(`metric ${this.name}: label "${name}" missing`);
      key += `${v}\u0000`;
    }
    if (Object.keys(labels).length !== this.labelNames.length)
      throw new Error(
        `metric ${this.name}: labels ${Object.keys(labels).join(",")} are not ${this.labelNames.join(",")}`,
      );
    return key;
  }
}

export class TallyCounter extends TallyMetric<CounterSeries> {
  readonly type = "counter" as const;

  constructor(o: {
    name: string;
    help: string;
    labelNames?: readonly string[];
    registers: readonly Registry[];
  }) {
    super(o.name, o.help, o.labelNames ?? [], o.registers);
  }

  protected create(): CounterSeries {
    return { value: 0 };
  }

  protected samples(labels: Labels, series: CounterSeries): Sample[] {
    return [{ value: series.value, labels }];
  }
}

class Buckets implements HistogramSeries {
  count = 0;
  sum = 0;
  /** Observations per bucket (not cumulative); the last is above every bound. */
  readonly counts: Float64Array;

  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    const { bounds } = this;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    this.counts[i]!++;
    this.count++;
    this.sum += value;
  }
}

export class TallyHistogram extends TallyMetric<HistogramSeries> {
  readonly type = "histogram" as const;
  private readonly bounds: readonly number[];

  constructor(o: {
    name: string;
    help: string;
    labelNames?: readonly string[];
    buckets: readonly number[];
    registers: readonly Registry[];
  }) {
    super(o.name, o.help, o.labelNames ?? [], o.registers);
    for (let i = 1; i < o.buckets.length; i++) {
      if (!(o.buckets[i]! > o.buckets[i - 1]!)) throw new Error(`metric ${o.name}: buckets must increase`);
    }
    this.bounds = [...o.buckets];
  }

  protected create(): HistogramSeries {
    return new Buckets(this.bounds);
  }

  protected samples(labels: Labels, series: HistogramSeries): Sample[] {
    const b = series as Buckets;
    const bucket = `${this.name}_bucket`;
    const out: Sample[] = [];
    let acc = 0;
    this.bounds.forEach((bound, i) => {
      acc += b.counts[i]!;
      out.push({ value: acc, labels: { le: String(bound) }, metricName: bucket, sharedLabels: labels });
    });
    out.push(
      { value: b.count, labels: { le: "+Inf" }, metricName: bucket, sharedLabels: labels },
      { value: b.sum, labels: {}, metricName: `${this.name}_sum`, sharedLabels: labels },
      { value: b.count, labels: {}, metricName: `${this.name}_count`, sharedLabels: labels },
    );
    return out;
  }
}
