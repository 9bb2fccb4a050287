import { useId, useState } from 'preact/hooks';
import { post } from '../api';
import { ErrorNote, invalidMarker, shortId } from '../components/ui';
import type { Explanation, SessionVerdict } from '../types';

/** "Why was my call denied?": runs the decision pipeline without side effects (POST /v1/decisions/explain). */
export function ExplainPage() {
  const p = useId();
  const [token, setToken] = useState('');
  const [server, setServer] = useState('');
  const [tool, setTool] = useState('');
  const [args, setArgs] = useState('{}');
  const [environment, setEnvironment] = useState('');
  const [session, setSession] = useState('');
  const [result, setResult] = useState<Explanation | null>(null);
  const [error, setError] = useState<unknown>(null);
  // The arguments are parsed here: a JSON error marks that field without asking the API.
  const [argsBroken, setArgsBroken] = useState(false);
  const invalid = invalidMarker(error, `${p}-error`, argsBroken ? new Set(['arguments']) : undefined);

  const submit = async (e: Event) => {
    e.preventDefault();
    setError(null);
    setArgsBroken(false);
    let parsed: unknown;
    try {
      parsed = JSON.parse(args || '{}');
    } catch {
      setArgsBroken(true);
      setError(new Error('Arguments must be a JSON object, e.g. {"path": "docs/a.md"}'));
      return;
    }
    try {
      setResult(
        await post<Explanation>('/v1/decisions/explain', {
          token_id: token.trim(),
          server: server.trim(),
          tool: tool.trim(),
          arguments: parsed,
          ...(environment ? { environment } : {}),
          ...(session.trim() ? { session_id: session.trim() } : {}),
        }),
      );
    } catch (err) {
      setResult(null);
      setError(err);
    }
  };

  return (
    <section aria-labelledby="explain-title">
      <h1 id="explain-title">Explain a denial</h1>
      <p class="lede">Runs every step of the decision for a token and a call, without counting it, halting anything or writing the audit trail, and shows where it would stop.</p>
      <form class="filters" onSubmit={submit} aria-label="Call to explain">
        <div>
          <label for={`${p}-token`}>Agent token id</label>
          <input id={`${p}-token`} {...invalid('token_id')} class="mono" required value={token} onInput={(e) => setToken(e.currentTarget.value)} />
        </div>
        <div>
          <label for={`${p}-server`}>Server</label>
          <input id={`${p}-server`} {...invalid('server')} required value={server} placeholder="filesystem" onInput={(e) => setServer(e.currentTarget.value)} />
        </div>
        <div>
          <label for={`${p}-tool`}>Tool</label>
          <input id={`${p}-tool`} {...invalid('tool')} required value={tool} placeholder="write_file" onInput={(e) => setTool(e.currentTarget.value)} />
        </div>
        <div>
          <label for={`${p}-env`}>Environment</label>
          <select id={`${p}-env`} {...invalid('environment')} value={environment} onChange={(e) => setEnvironment(e.currentTarget.value)}>
            <option value="">the token's</option>
            <option value="development">development</option>
            <option value="staging">staging</option>
            <option value="production">production</option>
          </select>
        </div>
        <div>
          <label for={`${p}-session`}>Session id (optional)</label>
          <input id={`${p}-session`} {...invalid('session_id')} class="mono" value={session} onInput={(e) => setSession(e.currentTarget.value)} />
        </div>
        <div class="wide-field">
          <label for={`${p}-args`}>Arguments (JSON)</label>
          <textarea id={`${p}-args`} {...invalid('arguments')} class="mono" rows={3} value={args} onInput={(e) => setArgs(e.currentTarget.value)} />
        </div>
        <div class="filter-actions">
          <button type="submit" class="primary">
            Explain
          </button>
        </div>
      </form>
      <ErrorNote error={error} id={`${p}-error`} />
      {/* Always there, empty until the first answer: a live region made together with its content is not read out. */}
      <div class="explanation" aria-live="polite" data-testid="explain-result">
        {result && (
          <>
          <p class={`verdict verdict-${result.decision}`}>
            <strong>{result.decision}</strong> <span class="mono">{result.code}</span>: {result.message}
          </p>
          <Where result={result} />
          {result.sessions && result.sessions.length > 1 && <SessionVerdicts sessions={result.sessions} shown={result.session_id} />}
          <h2 class="sub">Steps</h2>
          <div class="table-wrap">
          <table>
            <caption class="sr-only">Each step of the decision, in order</caption>
            <thead>
              <tr>
                <th scope="col">Step</th>
                <th scope="col">Verdict</th>
                <th scope="col">Code</th>
                <th scope="col">Message</th>
                <th scope="col">µs</th>
              </tr>
            </thead>
            <tbody>
              {result.steps.map((s) => (
                <tr key={s.step}>
                  <td class="mono">{s.step}</td>
                  <td>{s.verdict}</td>
                  <td class="mono">{s.code ?? ''}</td>
                  <td>{s.message ?? ''}</td>
                  <td>{Math.round(s.micros)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          </div>
          {result.flags.length > 0 && (
            <p class="hint">
              Flags: {result.flags.map((f) => `${f.name} ${f.enabled ? 'on' : 'OFF'}`).join(', ')}
            </p>
          )}
          </>
        )}
      </div>
    </section>
  );
}

/**
 * Which session the verdict and steps are about. Without a session id the answer is the first denial among
 * the token's open sessions, so an operator must see which one before resuming or lifting anything.
 */
function Where({ result }: { result: Explanation }) {
  const checked = result.sessions ? result.sessions.filter((s) => s.session_id !== null).length : 0;
  // A revoked token or unreadable Redis: no session was run, and the message says why.
  if (result.session_id === null && result.open_sessions === undefined) return null;
  return (
    <dl class="facts" data-testid="explain-where">
      <dt>Verdict and steps for</dt>
      <dd>
        {result.session_id === null ? (
          'a new session of the token'
        ) : (
          <>
            session{' '}
            <a class="mono" href="#/sessions">
              {result.session_id}
            </a>
          </>
        )}
      </dd>
      {result.open_sessions !== undefined && (
        <>
          <dt>Open sessions checked</dt>
          <dd>
            {result.open_sessions === 0
              ? 'none: the token has no open session, so only a new one'
              : checked < result.open_sessions
                ? `the ${checked} most recently active of the token's ${result.open_sessions}, and a new session`
                : `${result.open_sessions} (all of the token's), and a new session`}
          </dd>
        </>
      )}
    </dl>
  );
}

function SessionVerdicts({ sessions, shown }: { sessions: SessionVerdict[]; shown: string | null }) {
  return (
    <>
      <h2 class="sub">Each session checked</h2>
      <div class="table-wrap">
      <table class="calls">
        <caption class="sr-only">Verdict in each session checked, the most recently active first</caption>
        <thead>
          <tr>
            <th scope="col">Session</th>
            <th scope="col">Decision</th>
            <th scope="col">Code</th>
          </tr>
        </thead>
        <tbody>
          {sessions.map((s) => (
            <tr key={s.session_id ?? 'new'} class={s.session_id === shown ? 'selected' : undefined} data-session-id={s.session_id ?? 'new'}>
              <td>
                {s.session_id === null ? (
                  'new session'
                ) : (
                  <a class="mono" href="#/sessions" title={s.session_id}>
                    {shortId(s.session_id)}
                  </a>
                )}
                {s.session_id === shown && <span class="muted"> · the verdict above</span>}
              </td>
              <td>
                <span class={`pill pill-${s.decision}`}>{s.decision}</span>
              </td>
              <td class="mono">{s.code}</td>
            </tr>
          ))}
        </tbody>
      </table>
      </div>
    </>
  );
}
