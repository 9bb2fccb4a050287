import { useState } from 'preact/hooks';
import { get, post } from '../api';
import { Empty, ErrorNote, Freshness, IdRef, isConflict, REFRESH_MS, ReasonDialog, shortId, Time, useLoad, useTokenDescriptions } from '../components/ui';
import type { Session, SessionDetail } from '../types';

type State = 'halted' | 'active' | 'closed' | '';

export function SessionsPage() {
  const [state, setState] = useState<State>('halted');
  const [notice, setNotice] = useState('');
  const [resuming, setResuming] = useState<SessionDetail | null>(null);
  const [resumingToken, setResumingToken] = useState<string | null>(null);
  // After a session resume whose token is still halted, the session stays halted (by its token): the follow-up, kept here, resumes the token.
  const [tokenStillHalted, setTokenStillHalted] = useState<string | null>(null);
  // A halt answer names the trigger and the last 3 calls; so does this page, for each halted session.
  const list = useLoad(async () => {
    const page = await get<{ sessions: Session[] }>('/v1/sessions', { state: state || undefined, limit: 50 });
    return Promise.all(page.sessions.map((s) => get<SessionDetail>(`/v1/sessions/${s.id}`)));
  }, [state], { refreshMs: REFRESH_MS });
  const descriptions = useTokenDescriptions();
  /** A resume someone else made first (409): say so and show the list as it is now. */
  const conflicted = (err: unknown) => {
    if (!isConflict(err)) throw err;
    setNotice(`${err.explanation} The list is reloaded.`);
    list.reload();
  };

  return (
    <section aria-labelledby="sessions-title">
      <h1 id="sessions-title">Sessions</h1>
      <p class="lede">
        A kill-switch trigger halts a session and, by default, every session of its token, until a person resumes it with a reason. Resuming a session whose token is also halted leaves the token halted:
        resume the token too.
      </p>
      <div class="toolbar">
        <label>
          State{' '}
          <select value={state} onChange={(e) => setState(e.currentTarget.value as State)}>
            <option value="halted">halted</option>
            <option value="active">active</option>
            <option value="closed">closed</option>
            <option value="">all</option>
          </select>
        </label>
        <span class="spacer" />
        <Freshness list={list} />
      </div>
      <div class="notice" aria-live="polite" data-testid="session-notice">
        {notice && <p>{notice}</p>}
        {tokenStillHalted && (
          <button type="button" class="primary small" onClick={() => setResumingToken(tokenStillHalted)}>
            Resume token {shortId(tokenStillHalted)} too
          </button>
        )}
      </div>
      <ErrorNote error={list.error} />
      {list.data && list.data.length === 0 && <Empty>{state === 'halted' ? 'Nothing is halted.' : 'No sessions.'}</Empty>}
      {list.data?.map((s) => (
        <article key={s.id} class={`session session-${s.state}`} data-session-id={s.id} aria-label={`Session ${s.id}`}>
          <header class="session-head">
            <span class={`pill pill-${s.state}`}>{s.state}</span>
            {s.trigger && <strong class="mono trigger">{s.trigger}</strong>}
            <span>
              session <IdRef id={s.id} label="session id" />
            </span>
            <span>
              token <IdRef id={s.token_id} label="token id" />
              {descriptions.get(s.token_id) && <span class="token-description"> “{descriptions.get(s.token_id)}”</span>} · project {s.project_id}
            </span>
            <span class="spacer" />
            {/* Only a halt of its own can be resumed here: one held by its token alone answers 409, so say so instead. */}
            {s.state === 'halted' && s.halted_by === 'session' && (
              <button type="button" class="primary small" onClick={() => setResuming(s)} aria-label={`Resume session ${shortId(s.id)}${s.trigger ? ` (${s.trigger})` : ''}`}>
                Resume session
              </button>
            )}
            {s.state === 'halted' && s.halted_by === 'token' && <span class="muted">Halted by its token</span>}
            {s.token_halt && (
              <button type="button" class="small" onClick={() => setResumingToken(s.token_id)} aria-label={`Resume token ${shortId(s.token_id)} of session ${shortId(s.id)}`}>
                Resume token
              </button>
            )}
          </header>
          <dl class="facts">
            <dt>Halted</dt>
            <dd>
              <Time value={s.halted_at} empty="—" /> {s.halted_by === 'token' ? '(because its token was halted)' : ''}
            </dd>
            {s.token_halt && (
              <>
                <dt>Token halted</dt>
                <dd>
                  <span class="mono">{s.token_halt.trigger}</span> <Time value={s.token_halt.halted_at} />
                </dd>
              </>
            )}
            <dt>Declared scope</dt>
            <dd>
              {s.read_only ? 'read-only' : 'read-write'}
              {s.servers ? ` · servers ${s.servers.join(', ')}` : ''}
              {s.purpose ? ` · “${s.purpose}”` : ''}
            </dd>
            <dt>Opened</dt>
            <dd>
              <Time value={s.created_at} />
            </dd>
            {s.closed_at && (
              <>
                <dt>Closed</dt>
                <dd>
                  <Time value={s.closed_at} /> {closedByText(s.closed_by)}
                </dd>
              </>
            )}
          </dl>
          <h2 class="sub">Last calls</h2>
          {s.last_calls.length === 0 ? (
            <p class="muted">No calls recorded.</p>
          ) : (
            // In its own scrolling box: at 320 px the page does not scroll sideways (WCAG 1.4.10).
            <div class="table-wrap">
            <table class="calls">
              <caption class="sr-only">Last calls of session {s.id}</caption>
              <thead>
                <tr>
                  <th scope="col">When</th>
                  <th scope="col">Call</th>
                  <th scope="col">Arguments</th>
                  <th scope="col">Decision</th>
                  <th scope="col">Outcome</th>
                </tr>
              </thead>
              <tbody>
                {s.last_calls.slice(0, 3).map((c) => (
                  <tr key={c.id}>
                    <td>
                      <Time value={c.at} />
                    </td>
                    <td class="mono">
                      {c.server}/{c.tool}
                    </td>
                    <td>
                      <code class="args">{c.args}</code>
                    </td>
                    <td>
                      <span class={`pill pill-${c.decision}`}>{c.decision}</span> <span class="mono">{c.code}</span>
                    </td>
                    <td>{c.outcome ? `${c.outcome.status}${c.outcome.error ? `: ${c.outcome.error}` : ''}` : '—'}</td>
                  </tr>
                ))}
              </tbody>
            </table>
            </div>
          )}
          {s.halts.length > 0 && (
            <details>
              <summary>Halt history ({s.halts.length})</summary>
              <ul>
                {s.halts.map((h) => (
                  <li key={h.halted_at}>
                    <span class="mono">{h.trigger}</span> <Time value={h.halted_at} />
                    {h.resumed_at && (
                      <>
                        {' '}
                        → resumed by {h.resumed_by} <Time value={h.resumed_at} />: {h.resume_reason}
                      </>
                    )}
                  </li>
                ))}
              </ul>
            </details>
          )}
        </article>
      ))}
      {resuming && (
        <ReasonDialog
          title="Resume this session?"
          confirmLabel="Resume"
          reasonLabel="Why is it safe to continue? (audited)"
          onClose={() => setResuming(null)}
          onConfirm={async (reason) => {
            try {
              const res = await post<{ message: string; token_still_halted: boolean }>(`/v1/sessions/${resuming.id}/resume`, { reason });
              setNotice(res.message);
              setTokenStillHalted(res.token_still_halted ? resuming.token_id : null);
              list.reload();
            } catch (err) {
              conflicted(err);
            }
          }}
        >
          <p>
            Trigger <strong class="mono">{resuming.trigger}</strong>. Check the last calls first: the agent continues where it stopped.
          </p>
        </ReasonDialog>
      )}
      {resumingToken && (
        <ReasonDialog
          title="Resume the token and all its halted sessions?"
          confirmLabel="Resume token"
          reasonLabel="Why is it safe to continue? (audited)"
          onClose={() => setResumingToken(null)}
          onConfirm={async (reason) => {
            try {
              const res = await post<{ message: string }>(`/v1/keys/${resumingToken}/resume`, { reason });
              setNotice(res.message);
              setTokenStillHalted(null);
              list.reload();
            } catch (err) {
              conflicted(err);
            }
          }}
        >
          <p>
            Token <span class="mono">{resumingToken}</span>
            {descriptions.get(resumingToken) && <> “{descriptions.get(resumingToken)}”</>}: every session of it halted with the token continues.
          </p>
        </ReasonDialog>
      )}
    </section>
  );
}

/** Who closed a session, as GET /v1/sessions says it (`gateway:<id>`, `operator:<id>`, `idle-sweep`). */
function closedByText(by: string | null): string {
  if (by === null) return '';
  if (by === 'idle-sweep') return 'by the idle sweep (no allowed call for SESSION_IDLE_TIMEOUT_S)';
  const [kind, id] = [by.slice(0, by.indexOf(':')), by.slice(by.indexOf(':') + 1)];
  if (kind === 'gateway') return `by its gateway (key ${shortId(id)})`;
  if (kind === 'operator') return `by operator key ${shortId(id)}`;
  return `by ${by}`;
}
