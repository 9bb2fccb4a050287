import { readFileSync } from 'node:fs';
import { GATEWAY_METRIC_PREFIX, metricNamesIn, undeclaredMetrics } from './alert-rules.js';
import { parseExposition } from './exposition.js';

// deploy/grafana/killswitch.json read back for its tests: its panels, and every PromQL expression in it
// (panel targets and the variables' label_values queries) checked against a scrape. The control plane's
// expressions against a real control plane's GET /metrics (test/integration/metrics.test.ts), the
// gateway's against what GatewayMetrics serves (test/unit/grafana-dashboard.test.ts).
//
// No PromQL parser: a regex finds the metric selectors (as alert-rules.ts does) and the `agg by (...) (...)`
// clauses. The dashboard keeps to that small grammar; anything outside it (`) by (`, `on (`, label_replace
// ...) is reported as a problem rather than passed unchecked.

export const DASHBOARD = 'deploy/grafana/killswitch.json';

/** Labels Prometheus attaches to every scraped series (the scrape target's), not the exposition. */
const TARGET_LABELS = new Set(['instance', 'job']);

/** Which /metrics serves a series: the control plane's or the reference gateway's. */
export type Target = 'control-plane' | 'gateway';
/** The template variable each target's selectors filter `instance` by. */
export const INSTANCE_VARIABLE: Record<Target, string> = { 'control-plane': '$instance', gateway: '$gateway' };

export interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type?: string; uid?: string };
  gridPos: { h: number; w: number; x: number; y: number };
  targets?: Array<{ expr: string; legendFormat?: string; refId: string; datasource?: { type?: string; uid?: string } }>;
  panels?: Panel[];
}

export interface Variable {
  type: string;
  name: string;
  query?: string | { query: string };
  datasource?: { type?: string; uid?: string };
}

export interface Dashboard {
  schemaVersion: number;
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: Variable[] };
}

export function loadDashboard(file = DASHBOARD): Dashboard {
  return JSON.parse(readFileSync(file, 'utf8')) as Dashboard;
}

/** Every panel, those inside a (collapsed) row too. */
export function allPanels(dashboard: Dashboard): Panel[] {
  return dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
}

export interface Query {
  /** Where it is: a panel's title and refId, or a variable's name. */
  where: string;
  expr: string;
  legend?: string | undefined;
}

/** Every PromQL expression of the dashboard: each panel target's, each query variable's. */
export function dashboardQueries(dashboard: Dashboard): Query[] {
  const panels = allPanels(dashboard).flatMap((p) => (p.targets ?? []).map((t) => ({ where: `panel "${p.title}" ${t.refId}`, expr: t.expr, legend: t.legendFormat })));
  const variables = dashboard.templating.list
    .filter((v) => v.type === 'query')
    .map((v) => ({ where: `variable ${v.name}`, expr: typeof v.query === 'string' ? v.query : (v.query?.query ?? '') }));
  return [...panels, ...variables];
}

interface Matcher {
  label: string;
  op: string;
  value: string;
}
interface Selector {
  metric: string;
  matchers: Matcher[];
}

function selectorsIn(expr: string): Selector[] {
  const out: Selector[] = [];
  for (const m of expr.matchAll(/\b((?:killswitch|nodejs|process)_[a-z0-9_]+)\s*(?:\{([^}]*)\})?/g)) {
    const matchers = [...(m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g)].map((x) => ({ label: x[1]!, op: x[2]!, value: x[3]! }));
    out.push({ metric: m[1]!, matchers });
  }
  // The same names alert-rules.ts finds: the two regexes must not disagree on what a metric name is.
  const names = metricNamesIn(expr);
  if (names.join() !== out.map((s) => s.metric).join()) throw new Error(`selectors of ${expr}: ${out.map((s) => s.metric)} vs ${names}`);
  return out;
}

/** `agg by (labels) (inner)`: the labels, and the expression they group. */
function aggregations(expr: string): Array<{ labels: string[]; inner: string }> {
  const out: Array<{ labels: string[]; inner: string }> = [];
  for (const m of expr.matchAll(/\b(?:sum|min|max|avg|count|group|stddev|stdvar|topk|bottomk|quantile)\s+(?:by|without)\s*\(([^)]*)\)\s*\(/g)) {
    const open = m.index + m[0].length - 1;
    let depth = 0;
    let close = open;
    for (; close < expr.length; close++) {
      if (expr[close] === '(') depth++;
      else if (expr[close] === ')' && --depth === 0) break;
    }
    out.push({ labels: m[1]!.split(',').map((l) => l.trim()).filter(Boolean), inner: expr.slice(open + 1, close) });
  }
  return out;
}

/** Constructs the checks below do not understand, so would pass unchecked. */
const OUTSIDE_GRAMMAR: Array<[RegExp, string]> = [
  [/\)\s*(by|without)\s*\(/, 'write `agg by (...) (expr)`, not `agg(expr) by (...)`'],
  [/\b(on|ignoring)\s*\(/, 'vector matching (on/ignoring) is not checked'],
  [/\bgroup_(left|right)\b/, 'group_left/right is not checked'],
  [/\blabel_(replace|join)\s*\(/, 'label_replace/label_join make labels the check cannot see'],
];

/** The target a selector's series come from: the gateway's metric names, else what its instance filter says. */
function targetOf(selector: Selector): Target | undefined {
  if (selector.metric.startsWith(GATEWAY_METRIC_PREFIX)) return 'gateway';
  if (selector.metric.startsWith('killswitch_')) return 'control-plane';
  const instance = selector.matchers.find((m) => m.label === 'instance')?.value;
  return (Object.keys(INSTANCE_VARIABLE) as Target[]).find((t) => instance === INSTANCE_VARIABLE[t]);
}

/** Label names per sample name (`x_bucket` has `le`) in a text exposition. */
function labelsBySample(exposition: string): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const s of parseExposition(exposition)) {
    const set = out.get(s.name) ?? new Set<string>();
    for (const l of Object.keys(s.labels)) set.add(l);
    out.set(s.name, set);
  }
  return out;
}

/**
 * What is wrong with `queries` against the text exposition of `target`'s GET /metrics: a metric it does not
 * declare, a label a selector, a `by (...)` or a legend uses that its series do not carry, a selector of a
 * panel without the `instance=~"$instance"` (control plane) or `$gateway` filter of its target, an
 * expression outside the grammar checked here. Selectors of the other target are left to its own check.
 * A label can only be checked on a metric that has a series: one without is reported, so the caller must
 * produce the traffic that makes each series exist.
 */
export function dashboardDrift(queries: Query[], target: Target, exposition: string): string[] {
  const problems: string[] = [];
  const served = labelsBySample(exposition);
  for (const q of queries) {
    const selectors = selectorsIn(q.expr);
    if (selectors.length === 0) problems.push(`${q.where}: names no metric: ${q.expr}`);
    const targets = new Set(selectors.map(targetOf));
    if (targets.has(undefined)) problems.push(`${q.where}: a process_/nodejs_ selector without instance=~"$instance" or "$gateway": ${q.expr}`);
    if (targets.size > 1) problems.push(`${q.where}: mixes the control plane's and the gateway's metrics: ${q.expr}`);
    if (!targets.has(target)) continue;
    for (const [re, why] of OUTSIDE_GRAMMAR) if (re.test(q.expr)) problems.push(`${q.where}: ${why}: ${q.expr}`);

    const isPanel = q.where.startsWith('panel');
    for (const s of selectors) {
      if (isPanel && !s.matchers.some((m) => m.label === 'instance' && m.op === '=~' && m.value === INSTANCE_VARIABLE[target])) {
        problems.push(`${q.where}: ${s.metric} is not filtered by instance=~"${INSTANCE_VARIABLE[target]}"`);
      }
    }
    for (const name of undeclaredMetrics(exposition, selectors.map((s) => s.metric))) problems.push(`${q.where}: ${name} is not served`);

    const labelsOn = (metric: string) => served.get(metric);
    const check = (metric: string, label: string, how: string) => {
      if (TARGET_LABELS.has(label)) return;
      const labels = labelsOn(metric);
      if (!labels) problems.push(`${q.where}: no series of ${metric} to check its label ${label} (${how}) against`);
      else if (!labels.has(label)) problems.push(`${q.where}: ${metric} has no label ${label} (${how}); it has ${[...labels].join(', ') || 'none'}`);
    };
    for (const s of selectors) for (const m of s.matchers) check(s.metric, m.label, 'selector');
    const aggs = aggregations(q.expr);
    for (const a of aggs) for (const s of selectorsIn(a.inner)) for (const l of a.labels) check(s.metric, l, 'by');

    // A legend's {{label}} must be in the result: grouped by, or on the series when nothing aggregates.
    const legendLabels = [...(q.legend ?? '').matchAll(/\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}/g)].map((m) => m[1]!);
    const grouped = new Set(aggs.flatMap((a) => a.labels));
    for (const l of legendLabels) {
      if (aggs.length > 0 || /\b(sum|min|max|avg|count)\s*\(/.test(q.expr)) {
        if (!grouped.has(l)) problems.push(`${q.where}: legend {{${l}}} is not among the labels it groups by (${[...grouped].join(', ')})`);
      } else for (const s of selectors) check(s.metric, l, 'legend');
    }
  }
  return problems;
}
