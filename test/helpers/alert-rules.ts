import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';

// The metric names deploy/prometheus/alerts.yml uses, so the tests can check that /metrics serves each
// one: a single process in metrics.test.ts, a WORKERS > 1 cluster in workers.test.ts.

/** Served only by the primary of WORKERS > 1 (src/cluster.ts). */
export const CLUSTER_ONLY_METRICS = new Set(['killswitch_workers', 'killswitch_worker_restarts_total', 'killswitch_worker_hangs_total']);

/** Every killswitch_ and nodejs_ metric name in the rules' expressions. */
export function alertRuleMetrics(file = 'deploy/prometheus/alerts.yml'): { rules: number; names: Set<string> } {
  const doc = parseYaml(readFileSync(file, 'utf8')) as { groups: Array<{ rules: Array<{ alert: string; expr: string }> }> };
  const exprs = doc.groups.flatMap((g) => g.rules).map((r) => r.expr);
  return { rules: exprs.length, names: new Set(exprs.flatMap((e) => [...e.matchAll(/\b((?:killswitch|nodejs)_[a-z0-9_]+)/g)].map((m) => m[1]!))) };
}

/** The names a Prometheus text exposition does not declare (a histogram's _bucket/_count/_sum count as its own). */
export function undeclaredMetrics(exposition: string, names: Iterable<string>): string[] {
  return [...names].filter((name) => {
    const base = name.replace(/_(bucket|count|sum)$/, '');
    return !exposition.includes(`# TYPE ${name} `) && !exposition.includes(`# TYPE ${base} histogram`);
  });
}
