import type { Registry } from 'prom-client';

// A histogram for the request path. prom-client's Histogram hashes the label object and scans the
// buckets on every observe: ~360 ns here, so 8 pipeline steps + the decision + the HTTP request cost
// ~4 µs per decision. This one looks the series up by a pre-joined key and costs ~35 ns per observe
// (test/unit/metrics-histogram.test.ts). It renders through prom-client's Registry like any metric.

interface Series {
  labels: Record<string, string>;
  /** Per-bucket (not cumulative) counts; the last slot is +Inf. */
  counts: Float64Array;
  sum: number;
  count: number;
}

interface MetricValue {
  labels: Record<string, string | number>;
  value: number;
  metricName: string;
}

export class FastHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly series = new Map<string, Series>();
  private readonly upper: Float64Array;

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly string[],
    buckets: readonly number[],
    registry: Registry,
  ) {
    this.upper = Float64Array.from([...buckets].sort((a, b) => a - b));
    // Registry only needs name, help, type and get(); see prom-client lib/registry.js getMetricsAsString.
    registry.registerMetric(this as never);
  }

  /** `labelValues` in the order of `labelNames`. */
  observe(labelValues: readonly string[], value: number): void {
    const key = labelValues.length === 1 ? labelValues[0]! : labelValues.join('\u0001');
    let s = this.series.get(key);
    if (!s) {
      const labels: Record<string, string> = {};
      this.labelNames.forEach((n, i) => {
        labels[n] = labelValues[i] ?? '';
      });
      s = { labels, counts: new Float64Array(this.upper.length + 1), sum: 0, count: 0 };
      this.series.set(key, s);
    }
    const upper = this.upper;
    let i = 0;
    while (i < upper.length && value > upper[i]!) i++;
    s.counts[i]!++;
    s.sum += value;
    s.count++;
  }

  /** Count of observations of one series (tests and the decision log). */
  countOf(labelValues: readonly string[]): number {
    return this.series.get(labelValues.join('\u0001'))?.count ?? 0;
  }

  get(): { name: string; help: string; type: string; aggregator: string; values: MetricValue[] } {
    const values: MetricValue[] = [];
    for (const s of this.series.values()) {
      let cumulative = 0;
      for (let i = 0; i < this.upper.length; i++) {
        cumulative += s.counts[i]!;
        values.push({ labels: { le: this.upper[i]!, ...s.labels }, value: cumulative, metricName: `${this.name}_bucket` });
      }
      values.push({ labels: { le: '+Inf', ...s.labels }, value: s.count, metricName: `${this.name}_bucket` });
      values.push({ labels: s.labels, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: s.labels, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.series.clear();
  }
}
