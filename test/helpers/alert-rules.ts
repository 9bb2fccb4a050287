import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';

// The metric names deploy/prometheus/alerts.yml uses, so the tests can check that /metrics serves each
// one: a single process in metrics.test.ts, a WORKERS > 1 cluster in workers.test.ts, the gateway's in
// gateway-metrics.test.ts. metricNamesIn and undeclaredMetrics serve the Grafana dashboard's check too
// (grafana-dashboard.ts).

/** Served only by the primary of WORKERS > 1 (src/cluster.ts). */
export const CLUSTER_ONLY_METRICS = new Set(['killswitch_workers', 'killswitch_worker_restarts_total', 'killswitch_worker_hangs_total']);

/** The reference gateway's metrics (src/gateway/metrics.ts), served by the gateway, not the control plane. */
export const GATEWAY_METRIC_PREFIX = 'killswitch_gateway_';

/** The metric names of ours and of prom-client's defaults a PromQL expression names (not Prometheus's own `up`). */
export function metricNamesIn(expr: string): string[] {
  return [...expr.matchAll(/\b((?:killswitch|nodejs|process)_[a-z0-9_]+)/g)].map((m) => m[1]!);
}

/**
 * Every killswitch_, nodejs_ and process_ metric name in the rules' expressions: `names` the control plane's,
 * `gatewayNames` the gateway's (test/e2e/gateway-metrics.test.ts checks those against a gateway's scrape).
 */
export function alertRuleMetrics(file = 'deploy/prometheus/alerts.yml'): { rules: number; names: Set<string>; gatewayNames: Set<string> } {
  const doc = parseYaml(readFileSync(file, 'utf8')) as { groups: Array<{ rules: Array<{ alert: string; expr: string }> }> };
  const exprs = doc.groups.flatMap((g) => g.rules).map((r) => r.expr);
  const all = exprs.flatMap(metricNamesIn);
  return {
    rules: exprs.length,
    names: new Set(all.filter((n) => !n.startsWith(GATEWAY_METRIC_PREFIX))),
    gatewayNames: new Set(all.filter((n) => n.startsWith(GATEWAY_METRIC_PREFIX))),
  };
}

/** The names a Prometheus text exposition does not declare (a histogram's _bucket/_count/_sum count as its own). */
export function undeclaredMetrics(exposition: string, names: Iterable<string>): string[] {
  return [...names].filter((name) => {
    const base = name.replace(/_(bucket|count|sum)$/, '');
    return !exposition.includes(`# TYPE ${name} `) && !exposition.includes(`# TYPE ${base} histogram`);
  });
}
