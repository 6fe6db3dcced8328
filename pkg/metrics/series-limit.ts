/** Label value that stands for every device past the limit. */
export const OVERFLOW_LABEL = "_other";

/**
 * Bounds the cardinality of a per-device label: the first `max` devices seen get a series of
 * their own, later ones share OVERFLOW_LABEL. A Prometheus series per volume is fine for tens or
 * hundreds of volumes but not for an unbounded number (every label value is a series kept in
 * memory here and in the TSDB). A device's slot is freed when it disappears, so deleted volumes
 * do not hold series forever.
 */
export class SeriesLimit {
  private readonly admitted = new Set<string>();

  constructor(readonly max: number) {}

  labelFor(name: string): string {
    if (this.admitted.has(name)) return name;
    if (this.admitted.size < this.max) {
      this.admitted.add(name);
      return name;
    }
    return OVERFLOW_LABEL;
  }

  /** Forgets the admitted names not in `present` and returns them (their series are to be removed). */
  retain(present: ReadonlySet<string>): string[] {
    const gone = [...this.admitted].filter((name) => !present.has(name));
    for (const name of gone) this.admitted.delete(name);
    return gone;
  }
}
