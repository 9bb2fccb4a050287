import { useEffect, useId, useState } from 'preact/hooks';
import { get } from '../api';
import { Empty, ErrorNote, Time, TYPE_LABEL, useLoad, WarningIcon } from '../components/ui';
import { visibleText } from '../json-text';
import type { Environment, FlagConstraint, FlagStrategy, FlagsOverview, TokenType, UiSettings, WebhookRegistration } from '../types';

const TYPES: TokenType[] = ['ro', 'rw', 'admin'];
const ENVS: Environment[] = ['development', 'staging', 'production'];
const ENV_SHORT: Record<Environment, string> = { development: 'dev', staging: 'stg', production: 'prod' };

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

/**
 * The age of the flag state is only as fresh as this page's last answer: a page left open during an
 * incident asks again, so it never shows "0 s" for a control plane that stopped hearing from Unleash.
 */
const REFRESH_MS = 2000;

/**
 * Why flag changes made in Unleash may not be in force here, or [] when they are. The age threshold is the
 * control plane's own (UNLEASH_STALE_AFTER_S, the FLAGS_STALE alarm), compared as it compares it, so the
 * page turns loud no later than the alarm and never on a different rule.
 */
function notArriving(f: FlagsOverview): ('never' | 'age' | 'failing')[] {
  const reasons: ('never' | 'age' | 'failing')[] = [];
  if (f.age_s === null) reasons.push('never');
  else if (f.stale || f.age_s >= f.stale_after_s) reasons.push('age');
  if (f.fetch_failing) reasons.push('failing');
  return reasons;
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

function FreshnessWarning({ f, reasons }: { f: FlagsOverview; reasons: ('never' | 'age' | 'failing')[] }) {
  const titleId = useId();
  return (
    <section class="flags-warning" aria-labelledby={titleId}>
      <WarningIcon label="Warning" />
      <div>
        {/* Only the title is announced: the details below change on every refresh. */}
        <p id={titleId} role="alert" class="flags-warning-title">
          Flag changes made in Unleash are not reaching this control plane.
        </p>
        <ul class="flags-warning-reasons">
          {reasons.includes('never') && (
            <li>
              No successful fetch from Unleash since this control plane started{f.ready ? ': it runs on the flags of its backup file.' : '.'}
            </li>
          )}
          {reasons.includes('age') && (
            <li>
              No successful fetch for {plural(f.age_s ?? 0, 'second')}: the staleness alarm (FLAGS_STALE, UNLEASH_STALE_AFTER_S) is at {plural(f.stale_after_s, 'second')}.
            </li>
          )}
          {reasons.includes('failing') && (
            <li>
              Fetching the flags from Unleash is failing. Latest error, <Time value={f.last_error_at} />: <span class="mono">{f.last_error}</span>
            </li>
          )}
        </ul>
        <p>
          {f.ready
            ? 'The flags fetched last stay in force: a flag turned off in Unleash now is applied here only through the webhook (when it works), not by polling. '
            : 'No flags are loaded: every decision is denied (DEPENDENCY_UNAVAILABLE). '}
          To stop something now, use a break-glass kill on the <a href="#/kills">Kills</a> page: it works without Unleash.
        </p>
      </div>
    </section>
  );
}

/** Unleash's operators in words, as its own UI says them. */
const OPERATOR_TEXT: Record<string, string> = {
  IN: 'is one of',
  NOT_IN: 'is not one of',
  STR_CONTAINS: 'contains any of',
  STR_STARTS_WITH: 'starts with any of',
  STR_ENDS_WITH: 'ends with any of',
  NUM_EQ: '=',
  NUM_GT: '>',
  NUM_GTE: '≥',
  NUM_LT: '<',
  NUM_LTE: '≤',
  DATE_AFTER: 'is after',
  DATE_BEFORE: 'is before',
  SEMVER_EQ: '= (version)',
  SEMVER_GT: '> (version)',
  SEMVER_LT: '< (version)',
  SEMVER_GTE: '≥ (version)',
  SEMVER_LTE: '≤ (version)',
  REGEX: 'matches',
  IN_CIDR: 'is in network',
};

/** One constraint as a sentence: "userId is not one of tok-1, tok-2 … and 9,980 more". */
function constraintText(c: FlagConstraint): string {
  const more = c.values_total - c.values.length - c.values_withheld;
  const withheld = c.values_withheld > 0 ? ` (${c.values_withheld.toLocaleString('en')} of other projects not shown)` : '';
  const listed = c.values.length > 0 ? c.values.join(', ') : c.values_withheld > 0 ? '…' : '';
  const values = c.value ?? (listed !== '' ? `${listed}${more > 0 ? ` … and ${more.toLocaleString('en')} more (see Unleash)` : ''}${withheld}` : '(no values)');
  const text = `${c.context_name} ${OPERATOR_TEXT[c.operator] ?? c.operator} ${values}${c.case_insensitive ? ' (ignoring case)' : ''}`;
  // Written in Unleash, not checked here: invisible and reordering characters are shown as escapes.
  return visibleText(c.inverted ? `not: ${text}` : text);
}

function strategyLabel(s: FlagStrategy): string {
  const rollout = s.parameters['rollout'];
  return rollout !== undefined && rollout !== '100' ? `${s.name}, ${rollout} % of calls` : s.name;
}

/** What a flag with constraints is on for: each strategy's constraints (all must match), any strategy on turns it on. */
function Constraints({ strategies }: { strategies: FlagStrategy[] }) {
  const narrowing = strategies.filter((s) => s.constraints.length > 0 || s.segments.length > 0);
  const several = strategies.length > 1;
  return (
    <div class="constraint-rules">
      {several && <p>On when any of its {strategies.length} strategies is on; each is on only when all its constraints match:</p>}
      {narrowing.map((s, i) => (
        // Strategies and constraints have no id in the SDK's data: their position is their identity here.
        <div key={i}>
          {several && <span class="muted">{strategyLabel(s)}:</span>}
          <ul class="constraint-list">
            {s.constraints.map((c, j) => (
              <li key={j} class="mono">
                {constraintText(c)}
              </li>
            ))}
            {s.segments.map((sg) =>
              sg.constraints === null ? (
                <li key={`segment-${sg.id}`}>segment {sg.id}, unknown to this control plane: this strategy is never on</li>
              ) : (
                sg.constraints.map((c, j) => (
                  <li key={`segment-${sg.id}-${j}`} class="mono">
                    {constraintText(c)} <span class="muted">(segment {sg.id})</span>
                  </li>
                ))
              ),
            )}
          </ul>
        </div>
      ))}
    </div>
  );
}

function by(r: WebhookRegistration): string {
  const where = r.host ? ` on ${r.host}` : '';
  return r.by === 'flags sync' ? `by killswitch flags sync${where}` : `at the start of the control plane${where}`;
}

/** Whether Unleash knows where to post: an operator cannot tell "nothing changed" from "Unleash does not know us" by the events alone. */
function Registration({ r, url }: { r: WebhookRegistration; url: string }) {
  const fix = (
    <>
      Register it from a shell with the Unleash admin token and this control plane's DATABASE_URL (or its UNLEASH_WEBHOOK_SECRET, when set):{' '}
      <span class="mono">killswitch flags sync --replace-webhook --webhook-url {url}</span>
    </>
  );
  switch (r.state) {
    case 'registered':
      return (
        <>
          <span class="pill pill-on">registered</span> in Unleash <Time value={r.at} />, {by(r)}: Unleash posts to <span class="mono">{url}</span>
        </>
      );
    case 'elsewhere':
      return (
        <span class="registration-problem">
          <WarningIcon label="Warning" /> Unleash was last told <Time value={r.at} />, {by(r)}, to post to <span class="mono">{r.url}</span>
          {r.same_secret === false && ' with another secret'}, not to this control plane (<span class="mono">{url}</span>): flag events do not reach it. {fix}
        </span>
      );
    case 'failed':
      return (
        <span class="registration-problem">
          <WarningIcon label="Warning" /> <span class="pill pill-off">registration failed</span> <Time value={r.at} />, {by(r)}: <span class="mono">{r.error}</span>.{' '}
          {r.registered_at ? (
            <>
              It was registered before, <Time value={r.registered_at} />, to <span class="mono">{r.registered_url}</span>
              {r.registered_same_secret === false
                ? " with another secret than this control plane's (the old published default, after an upgrade?): Unleash posts flag events there and this control plane refuses them, so they arrive by polling only."
                : ': that stays in Unleash unless removed there.'}
            </>
          ) : (
            <>Unleash may not know where to post flag events: they then arrive by polling only. </>
          )}{' '}
          {fix}
        </span>
      );
    case 'not-attempted':
      return (
        <>
          <span class="pill pill-pending">not registered</span> no registration of <span class="mono">{url}</span> recorded (this control plane's start did not register it: see its
          log). {fix}
        </>
      );
    default:
      return (
        <>
          unknown: <span class="mono">{r.error}</span>
        </>
      );
  }
}

function WebhookLine({ webhook }: { webhook: FlagsOverview['webhook'] }) {
  return (
    <dl class="facts webhook">
      <dt>Unleash webhook</dt>
      <dd class="registration">
        <Registration r={webhook.registration} url={webhook.url} />
      </dd>
      <dt>Last webhook event</dt>
      <dd>
        {webhook.last_event_at ? (
          <>
            <span class="mono">{webhook.last_event_type ?? 'unknown event'}</span>
            {webhook.last_event_flag && (
              <>
                {' '}
                on <span class="mono">{webhook.last_event_flag}</span>
              </>
            )}
            , <Time value={webhook.last_event_at} />
          </>
        ) : (
          <span class="muted">none since this control plane started</span>
        )}
      </dd>
    </dl>
  );
}

/**
 * The Unleash UI address. The embedded Unleash listens on the control plane's host, which the control plane
 * knows as 127.0.0.1: a browser on another machine reaches it under the name it used for this page.
 */
function unleashUi(settings: UiSettings | undefined): string | null {
  if (!settings?.unleash_ui_url) return null;
  try {
    const url = new URL(settings.unleash_ui_url);
    if (LOOPBACK.has(url.hostname) && !LOOPBACK.has(location.hostname)) url.hostname = location.hostname;
    return url.toString().replace(/\/$/, '');
  } catch {
    return null;
  }
}

export function FlagsPage() {
  const flags = useLoad(() => get<FlagsOverview>('/v1/flags'), []);
  const settings = useLoad(() => get<UiSettings>('/v1/ui/settings'), []);
  const ui = unleashUi(settings.data);
  const f = flags.data;
  const [answeredAt, setAnsweredAt] = useState<number | null>(null);
  useEffect(() => {
    if (flags.data) setAnsweredAt(Date.now());
  }, [flags.data]);
  // The next request once the last one is answered (a slow answer is never cut off by the next tick).
  useEffect(() => {
    if (flags.loading) return;
    const timer = setTimeout(flags.reload, REFRESH_MS);
    return () => clearTimeout(timer);
  }, [flags.loading, flags.reload]);
  const reasons = f ? notArriving(f) : [];
  // The runbook's threshold (section A): above 5 s, break glass rather than toggle flags.
  const slow = f !== undefined && f !== null && f.age_s !== null && f.age_s > 5;
  return (
    <section aria-labelledby="flags-title">
      <h1 id="flags-title">Flags</h1>
      <p class="lede">
        What this control plane sees now. Flags are evaluated in memory on every call; <em>enabled means allowed</em>, so a missing flag denies. To switch a capability off during an incident, toggle the
        flag in the Unleash UI, in the environment named below: every replica denies within about a second.
      </p>
      <ErrorNote error={flags.error} />
      {f && flags.error && answeredAt !== null && (
        <p class="hint">
          This page cannot reach the control plane: what follows is its last answer, <Time value={answeredAt} />.
        </p>
      )}
      {f && (
        <>
          {reasons.length > 0 && <FreshnessWarning f={f} reasons={reasons} />}
          <div class="stats">
            <div class="stat">
              <span class="stat-value">{f.environment}</span>
              <span class="stat-label">Unleash environment to toggle in</span>
            </div>
            <div class="stat">
              <span class={`stat-value ${f.ready ? 'ok' : 'bad'}`}>{f.ready ? 'loaded' : 'NOT LOADED'}</span>
              <span class="stat-label">{f.ready ? 'flags from Unleash' : 'flags: every decision is denied until they load'}</span>
            </div>
            <div class="stat flag-age">
              {/* Red at the alarm; above 5 s the runbook's threshold (section A): changes may not be arriving, so say what to do. */}
              <span class={`stat-value ${reasons.length > 0 ? 'bad' : slow ? 'warn' : ''}`}>{f.age_s === null ? 'never' : `${f.age_s} s`}</span>
              <span class="stat-label">
                flag state age: since the last fetch from Unleash (normally 0–2 s, alarm at {f.stale_after_s} s)
              </span>
              {slow && (
                <span class="stat-label warn" data-testid="flag-age-slow">
                  Above 5 s: a flag turned off in Unleash may not reach this control plane. Stop calls with a kill instead (<a href="#/kills">Kills</a>).
                </span>
              )}
            </div>
            <div class="stat">
              <span class="stat-value">{f.source}</span>
              <span class="stat-label">source · revision {f.revision ?? '—'}</span>
            </div>
            <div class="stat">
              <span class="stat-value">{f.backup.state}</span>
              <span class="stat-label">backup file {f.backup.age_s === null ? '' : `(${f.backup.age_s} s old)`}</span>
            </div>
          </div>
          {f.last_error && !f.fetch_failing && (
            <p class="hint">
              Last Unleash error <Time value={f.last_error_at} />, past (a fetch succeeded since): {f.last_error}
            </p>
          )}
          <WebhookLine webhook={f.webhook} />
          <p class="hint">
            Unleash posts each flag change here, so a flag turned off denies at once and raises FLAG_DISABLED. No event, or one older than a change you made: the webhook does not reach this control plane;
            the change still arrives by polling (see the age above).
          </p>
          <div class="toolbar">
            {ui ? (
              <a class="button primary" href={ui} target="_blank" rel="noreferrer noopener">
                Open the Unleash UI ↗
              </a>
            ) : (
              <span class="muted">The Unleash UI address is not known to this control plane (set UNLEASH_URL).</span>
            )}
          </div>
          {f.overrides.length > 0 && (
            <>
              <h2>Webhook overrides in force</h2>
              <p class="hint">Unleash reported these flags off or archived; they deny here at once, before the next poll confirms.</p>
              <ul>
                {f.overrides.map((o) => (
                  <li key={o.flag}>
                    <span class="mono">{o.flag}</span> {o.reason} <Time value={o.at} />
                  </li>
                ))}
              </ul>
            </>
          )}
          {f.flags.length === 0 && <Empty>No flags loaded.</Empty>}
          {f.flags.length > 0 && (
            <div class="table-wrap">
              <table class="flags">
                <caption class="sr-only">Flags and their result per token type and agent environment</caption>
                <thead>
                  <tr>
                    <th scope="col" rowSpan={2}>
                      Flag
                    </th>
                    <th scope="col" rowSpan={2}>
                      State
                    </th>
                    {TYPES.map((t) => (
                      <th key={t} scope="colgroup" colSpan={3}>
                        {TYPE_LABEL[t]}
                      </th>
                    ))}
                    <th scope="col" rowSpan={2}>
                      <span class="sr-only">Unleash</span>
                    </th>
                  </tr>
                  <tr>
                    {TYPES.flatMap((t) =>
                      ENVS.map((e) => (
                        <th key={`${t}-${e}`} scope="col" class="env-head" title={e}>
                          {ENV_SHORT[e]}
                        </th>
                      )),
                    )}
                  </tr>
                </thead>
                <tbody>
                  {f.flags.map((flag) => (
                    <tr key={flag.name}>
                      <td>
                        <span class="mono">{flag.name}</span>
                        {flag.description && <div class="hint">{visibleText(flag.description)}</div>}
                      </td>
                      <td>
                        <span class={`pill pill-${flag.enabled ? 'on' : 'off'}`}>{flag.enabled ? 'on' : 'off'}</span>
                        {flag.source === 'webhook' && <span class="pill pill-off">webhook</span>}
                        {flag.constraints > 0 && (
                          <div class="hint constraints">
                            <span class="pill pill-pending">{plural(flag.constraints, 'constraint')}</span> on for some calls only (a targeted kill, say): the grid does not show it
                            <Constraints strategies={flag.active_strategies} />
                          </div>
                        )}
                      </td>
                      {flag.evaluations === null && (
                        <td colSpan={TYPES.length * ENVS.length} class="muted">
                          not evaluated: it cannot be without counting it in Unleash's usage metrics (see the control plane's start log)
                        </td>
                      )}
                      {TYPES.flatMap((t) =>
                        ENVS.map((e) => {
                          if (flag.evaluations === null) return null;
                          const on = flag.evaluations[t][e];
                          return (
                            <td key={`${t}-${e}`} class={on ? 'eval on' : 'eval off'} title={`${TYPE_LABEL[t]} token in ${e}: ${on ? 'allowed' : 'denied'}`}>
                              <span aria-hidden="true">{on ? '✓' : '✗'}</span>
                              <span class="sr-only">{on ? 'allowed' : 'denied'}</span>
                            </td>
                          );
                        }),
                      )}
                      <td>
                        {ui && (
                          <a href={`${ui}/projects/default/features/${encodeURIComponent(flag.name)}`} target="_blank" rel="noreferrer noopener" aria-label={`Toggle ${flag.name} in Unleash (opens in a new tab)`}>
                            Toggle ↗
                          </a>
                        )}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
          <p class="hint">
            Per token type and agent environment, for a made-up token with no role, project, session, server or tool: a constraint on any of those, or on one token (userId), is not applied in
            this grid. Flags with constraints say so under their state; see what one stops with <a href="#/explain">Explain a denial</a> or Unleash's Playground.
          </p>
        </>
      )}
    </section>
  );
}
