// The Prometheus text exposition read back into samples, for the tests of the control plane's /metrics
// (test/integration/metrics.test.ts) and the gateway's (test/e2e/gateway-metrics.test.ts).

export type Labels = Record<string, string>;

export interface Sample {
  name: string;
  labels: Labels;
  value: number;
}

/** Parses the text exposition into samples. */
export function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Labels = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/**
 * `value`: the sum of the samples of `name` whose labels include `labels`, undefined when there is none;
 * `v`: the same, 0 when there is none.
 */
export function exposition(text: string) {
  const samples = parseExposition(text);
  const value = (name: string, labels: Labels = {}): number | undefined => {
    const hits = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
    return hits.length ? hits.reduce((n, s) => n + s.value, 0) : undefined;
  };
  return { text, samples, value, v: (name: string, labels: Labels = {}) => value(name, labels) ?? 0 };
}
