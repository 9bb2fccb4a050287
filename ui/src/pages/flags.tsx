import { get } from '../api';
import { Empty, ErrorNote, Time, TYPE_LABEL, useLoad } from '../components/ui';
import type { Environment, FlagsOverview, TokenType, UiSettings } from '../types';

const TYPES: TokenType[] = ['ro', 'rw', 'admin'];
const ENVS: Environment[] = ['development', 'staging', 'production'];
const ENV_SHORT: Record<Environment, string> = { development: 'dev', staging: 'stg', production: 'prod' };

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

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
  return (
    <section aria-labelledby="flags-title">
      <h1 id="flags-title">Flags</h1>
      <p class="lede">
        What this control plane sees now. Flags are evaluated in memory on every call; <em>enabled means allowed</em>, so a missing flag denies. To switch a capability off during an incident, toggle the
        flag in the Unleash UI, in the environment named below: every replica denies within about a second.
      </p>
      <ErrorNote error={flags.error} />
      {f && (
        <>
          <div class="stats">
            <div class="stat">
              <span class="stat-value">{f.environment}</span>
              <span class="stat-label">Unleash environment to toggle in</span>
            </div>
            <div class="stat">
              <span class={`stat-value ${f.ready ? 'ok' : 'bad'}`}>{f.ready ? 'loaded' : 'NOT LOADED'}</span>
              <span class="stat-label">flags (not loaded: every decision denies)</span>
            </div>
            <div class="stat">
              <span class={`stat-value ${f.stale ? 'bad' : 'ok'}`}>{f.stale ? 'stale' : 'fresh'}</span>
              <span class="stat-label">
                last fetch <Time value={f.last_fetch_at} empty="never" />
              </span>
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
          {f.last_error && (
            <p class="error-note" role="status">
              Last Unleash error <Time value={f.last_error_at} />: {f.last_error}
            </p>
          )}
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
                        {flag.description && <div class="hint">{flag.description}</div>}
                      </td>
                      <td>
                        <span class={`pill pill-${flag.enabled ? 'on' : 'off'}`}>{flag.enabled ? 'on' : 'off'}</span>
                        {flag.source === 'webhook' && <span class="pill pill-off">webhook</span>}
                      </td>
                      {TYPES.flatMap((t) =>
                        ENVS.map((e) => {
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
                          <a href={`${ui}/projects/default/features/${encodeURIComponent(flag.name)}`} target="_blank" rel="noreferrer noopener" aria-label={`Toggle ${flag.name} in Unleash`}>
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
          <p class="hint">Per token type and agent environment, with no other context: constraints on role, server or tool are not applied in this grid.</p>
        </>
      )}
    </section>
  );
}
