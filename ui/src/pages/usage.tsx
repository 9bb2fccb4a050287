import type { ChartConfiguration } from 'chart.js';
import { useMemo, useState } from 'preact/hooks';
import { download, get } from '../api';
import { ChartCanvas, PALETTE } from '../components/chart';
import { Empty, ErrorNote, percent, shortId, Time, TokenBadge, useLoad } from '../components/ui';
import type { AgentToken, Counts, TokenUsage } from '../types';

const RANGES = [
  { id: '1', label: 'Last 24 hours', days: 1 },
  { id: '7', label: 'Last 7 days', days: 7 },
  { id: '30', label: 'Last 30 days', days: 30 },
  { id: '90', label: 'Last 90 days', days: 90 },
];
const TOP = 8;
const HOUR_MS = 3_600_000;

/** The UTC days of [from, to): a window ending at midnight has no bar for the day that starts then. */
function days(from: Date, to: Date): string[] {
  const out: string[] = [];
  const d = new Date(Date.UTC(from.getUTCFullYear(), from.getUTCMonth(), from.getUTCDate()));
  while (d < to) {
    out.push(d.toISOString().slice(0, 10));
    d.setUTCDate(d.getUTCDate() + 1);
  }
  return out;
}

function add(into: Counts, c: Counts): void {
  into.calls += c.calls;
  into.allowed += c.allowed;
  into.denied += c.denied;
  into.results += c.results;
  into.successes += c.successes;
  into.errors += c.errors;
}

const zero = (): Counts => ({ calls: 0, allowed: 0, denied: 0, results: 0, successes: 0, errors: 0 });

export function UsagePage() {
  const [range, setRange] = useState('7');
  const [type, setType] = useState('');
  const [project, setProject] = useState('');
  const [focus, setFocus] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  // From and to on whole UTC hours, covering at least the range: the API answers whole hours from its
  // hourly rollup and reads raw audit rows only for partial hours at the edges (docs/audit.md), up to an
  // hour of them, which on a busy trail is most of the query's time.
  const period = useMemo(() => {
    const now = Date.now();
    const to = new Date(Math.ceil(now / HOUR_MS) * HOUR_MS);
    const from = new Date(Math.floor((now - (RANGES.find((r) => r.id === range)?.days ?? 7) * 86_400_000) / HOUR_MS) * HOUR_MS);
    return { from: from.toISOString(), to: to.toISOString() };
  }, [range]);
  const query = { ...period, type: type || undefined, project: project.trim() || undefined };
  const usage = useLoad(() => get<{ from: string; to: string; tokens: TokenUsage[] }>('/v1/usage', query), [period, type, project]);
  // Names for the tokens (prefix and description); usage rows carry only ids.
  const keys = useLoad(() => get<{ keys: AgentToken[] }>('/v1/keys', { limit: 500 }).catch(() => ({ keys: [] })), []);
  const names = useMemo(() => new Map((keys.data?.keys ?? []).map((k) => [k.id, k.description ? `${k.display_prefix}… ${k.description}` : `${k.display_prefix}…`])), [keys.data]);
  const nameOf = (id: string) => names.get(id) ?? shortId(id);

  const tokens = usage.data?.tokens ?? [];
  const shown = useMemo(() => (focus ? tokens.filter((t) => t.token_id === focus) : tokens), [tokens, focus]);
  const charts = useMemo(() => buildCharts(shown, period.from, period.to, nameOf), [shown, period, names]);
  const totals = useMemo(() => {
    const t = zero();
    for (const u of tokens) add(t, u);
    return t;
  }, [tokens]);

  return (
    <section aria-labelledby="usage-title">
      <h1 id="usage-title">Usage</h1>
      <p class="lede">Calls per agent token from the audit trail: how often, which operations, how many were denied, and how many of the allowed calls succeeded.</p>
      <div class="toolbar">
        <label>
          Period{' '}
          <select value={range} onChange={(e) => setRange(e.currentTarget.value)}>
            {RANGES.map((r) => (
              <option key={r.id} value={r.id}>
                {r.label}
              </option>
            ))}
          </select>
        </label>
        <label>
          Token type{' '}
          <select value={type} onChange={(e) => setType(e.currentTarget.value)}>
            <option value="">any</option>
            <option value="ro">read-only</option>
            <option value="rw">write</option>
            <option value="admin">admin</option>
          </select>
        </label>
        <label>
          Project <input value={project} size={12} onChange={(e) => setProject(e.currentTarget.value)} />
        </label>
        <span class="spacer" />
        <button
          type="button"
          onClick={() => download('/v1/usage', { ...query, format: 'csv' }, 'usage.csv').catch(setError)}
        >
          Export CSV
        </button>
      </div>
      <ErrorNote error={usage.error ?? error} />
      {usage.data && tokens.length === 0 && <Empty>No calls in this period.</Empty>}
      {tokens.length > 0 && (
        <>
          <div class="stats">
            <Stat label="Calls" value={String(totals.calls)} />
            <Stat label="Allowed" value={String(totals.allowed)} />
            <Stat label="Denied" value={String(totals.denied)} />
            <Stat label="Success rate of results" value={totals.results ? percent(totals.successes / totals.results) : '—'} />
            <Stat label="Tokens" value={String(tokens.length)} />
          </div>
          {focus && (
            <p class="focus-note">
              Charts show token <span class="mono">{nameOf(focus)}</span> only.{' '}
              <button type="button" class="small" onClick={() => setFocus(null)}>
                Show all tokens
              </button>
            </p>
          )}
          <div class="charts">
            <figure>
              <figcaption>Calls per day{focus ? '' : ` (top ${Math.min(TOP, shown.length)} tokens)`}</figcaption>
              <ChartCanvas config={charts.perDay} summary={charts.perDaySummary} />
            </figure>
            <figure>
              <figcaption>Operations: allowed and denied</figcaption>
              <ChartCanvas config={charts.operations} summary={charts.operationsSummary} />
            </figure>
            <figure>
              <figcaption>Results: success and error</figcaption>
              <ChartCanvas config={charts.outcomes} summary={charts.outcomesSummary} height={220} />
            </figure>
          </div>
          <div class="table-wrap">
            <table>
              <caption class="sr-only">Usage per token</caption>
              <thead>
                <tr>
                  <th scope="col">Token</th>
                  <th scope="col">Type</th>
                  <th scope="col">Project</th>
                  <th scope="col">Calls</th>
                  <th scope="col">Allowed</th>
                  <th scope="col">Denied</th>
                  <th scope="col">Success rate</th>
                  <th scope="col">Error rate</th>
                  <th scope="col">Avg duration</th>
                  <th scope="col">Last used</th>
                  <th scope="col">
                    <span class="sr-only">Focus</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {tokens.map((t) => (
                  <tr key={t.token_id} class={focus === t.token_id ? 'selected' : ''}>
                    <td class="mono" title={t.token_id}>
                      {nameOf(t.token_id)}
                    </td>
                    <td>
                      <TokenBadge type={t.token_type} />
                    </td>
                    <td>{t.project_id ?? '—'}</td>
                    <td>{t.calls}</td>
                    <td>{t.allowed}</td>
                    <td>{t.denied}</td>
                    <td>{percent(t.success_rate)}</td>
                    <td>{percent(t.error_rate)}</td>
                    <td>{t.avg_duration_ms === null ? '—' : `${Math.round(t.avg_duration_ms)} ms`}</td>
                    <td>
                      <Time value={t.last_used} />
                    </td>
                    <td>
                      <button type="button" class="small" aria-pressed={focus === t.token_id} onClick={() => setFocus(focus === t.token_id ? null : t.token_id)}>
                        {focus === t.token_id ? 'All tokens' : 'Chart this'}
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      )}
    </section>
  );
}

function Stat({ label, value }: { label: string; value: string }) {
  return (
    <div class="stat">
      <span class="stat-value">{value}</span>
      <span class="stat-label">{label}</span>
    </div>
  );
}

function buildCharts(tokens: TokenUsage[], from: string, to: string, nameOf: (id: string) => string) {
  const labels = days(new Date(from), new Date(to));
  const top = [...tokens].sort((a, b) => b.calls - a.calls).slice(0, TOP);
  const perDay: ChartConfiguration = {
    type: 'line',
    data: {
      labels,
      datasets: top.map((t, i) => {
        const byDay = new Map(t.per_day.map((d) => [d.day.slice(0, 10), d.calls]));
        return {
          label: nameOf(t.token_id),
          data: labels.map((d) => byDay.get(d) ?? 0),
          borderColor: PALETTE[i % PALETTE.length],
          backgroundColor: PALETTE[i % PALETTE.length],
          tension: 0.2,
        };
      }),
    },
    options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } }, plugins: { legend: { position: 'bottom' } } },
  };

  const ops = new Map<string, Counts>();
  for (const t of tokens) {
    for (const o of t.operations) {
      const key = `${o.server ?? '?'}/${o.tool ?? '?'}`;
      const c = ops.get(key) ?? zero();
      add(c, o);
      ops.set(key, c);
    }
  }
  const opRows = [...ops.entries()].sort((a, b) => b[1].calls - a[1].calls).slice(0, 12);
  const operations: ChartConfiguration = {
    type: 'bar',
    data: {
      labels: opRows.map(([k]) => k),
      datasets: [
        { label: 'allowed', data: opRows.map(([, c]) => c.allowed), backgroundColor: '#059669' },
        { label: 'denied', data: opRows.map(([, c]) => c.denied), backgroundColor: '#dc2626' },
      ],
    },
    options: { indexAxis: 'y', scales: { x: { stacked: true, beginAtZero: true, ticks: { precision: 0 } }, y: { stacked: true } }, plugins: { legend: { position: 'bottom' } } },
  };

  const total = zero();
  for (const t of tokens) add(total, t);
  const outcomes: ChartConfiguration = {
    type: 'doughnut',
    data: {
      labels: ['success', 'error', 'no result reported'],
      datasets: [{ data: [total.successes, total.errors, Math.max(0, total.allowed - total.results)], backgroundColor: ['#059669', '#dc2626', '#cbd5e1'] }],
    },
    options: { plugins: { legend: { position: 'right' } } },
  };

  return {
    perDay,
    perDaySummary: `Calls per day for ${top.length} tokens, ${labels[0]} to ${labels[labels.length - 1]}.`,
    operations,
    operationsSummary: opRows.map(([k, c]) => `${k}: ${c.allowed} allowed, ${c.denied} denied`).join('; ') || 'No operations.',
    outcomes,
    outcomesSummary: `${total.successes} successful results, ${total.errors} errors, ${Math.max(0, total.allowed - total.results)} allowed calls with no result reported.`,
  };
}
