import { Fragment } from 'preact';
import { useEffect, useId, useRef, useState } from 'preact/hooks';
import { ApiError, download, get, type Query } from '../api';
import { Empty, ErrorNote, IdRef, isoFromLocal, Json, LocalZoneHint, Time, TokenBadge, utcText } from '../components/ui';
import type { AuditEvent } from '../types';

const LIVE_POLL_MS = 2000;
const PAGE = 100;
/** The live tail's answers read at most per poll (a flood beyond PAGE × LIVE_PAGES continues at the next poll). */
const LIVE_PAGES = 5;

const DECISION_CODES = [
  'OK',
  'PERMISSION_DENIED',
  'KILL_SWITCH',
  'UNKNOWN_SERVER',
  'TOOL_CHANGED',
  'ENVIRONMENT_FORBIDDEN',
  'HUMAN_AUTHORIZATION_REQUIRED',
  'APPROVAL_REQUIRED',
  'APPROVAL_EXPIRED',
  'APPROVAL_REJECTED',
  'APPROVAL_USED',
  'RATE_LIMITED',
  'SESSION_HALTED',
  'SESSION_UNKNOWN',
  'CASCADE_WRITE',
  'DEPENDENCY_UNAVAILABLE',
];

interface Filters {
  token: string;
  type: string;
  session: string;
  server: string;
  tool: string;
  decision: string;
  code: string;
  kind: string;
  from: string;
  to: string;
}

const EMPTY: Filters = { token: '', type: '', session: '', server: '', tool: '', decision: '', code: '', kind: '', from: '', to: '' };

function toQuery(f: Filters): Query {
  return {
    token: f.token.trim() || undefined,
    type: f.type || undefined,
    session: f.session.trim() || undefined,
    server: f.server.trim() || undefined,
    tool: f.tool.trim() || undefined,
    decision: f.decision || undefined,
    code: f.code.trim() || undefined,
    kind: f.kind || undefined,
    from: isoFromLocal(f.from),
    to: isoFromLocal(f.to),
  };
}

export function AuditPage() {
  const [draft, setDraft] = useState<Filters>(EMPTY);
  const [applied, setApplied] = useState<Filters>(EMPTY);
  const [events, setEvents] = useState<AuditEvent[]>([]);
  const [next, setNext] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const [live, setLive] = useState(false);
  const [open, setOpen] = useState<string | null>(null);
  const [exported, setExported] = useState('');
  const seen = useRef(new Set<string>());
  // The live tail's place: the `follow` of the last answer (GET /v1/audit?after=, docs/audit.md).
  const follow = useRef<string | null>(null);
  const prefix = useId();
  const ids = Object.fromEntries(Object.keys(EMPTY).map((k) => [k, `${prefix}-${k}`])) as Record<keyof Filters, string>;

  useEffect(() => {
    let live = true;
    setLoading(true);
    get<{ events: AuditEvent[]; next: string | null; follow: string }>('/v1/audit', { ...toQuery(applied), limit: PAGE }).then(
      (page) => {
        if (!live) return;
        seen.current = new Set(page.events.map((e) => e.id));
        follow.current = page.follow;
        setEvents(page.events);
        setNext(page.next);
        setError(null);
        setLoading(false);
      },
      (err) => {
        if (!live) return;
        setError(err);
        setLoading(false);
      },
    );
    return () => {
      live = false;
    };
  }, [applied]);

  // Live tail: the rows committed since the last answer, with the same filters, whatever their ts (a row
  // replayed from a replica's spool after a Postgres outage keeps the time of its call: a poll by time
  // never showed it). Newest commit on top; an answer cut at PAGE rows continues at once (up to LIVE_PAGES).
  useEffect(() => {
    if (!live) return;
    let stopped = false;
    let busy = false;
    const tick = async () => {
      if (busy || follow.current === null) return;
      busy = true;
      try {
        for (let pages = 0; pages < LIVE_PAGES && follow.current !== null; pages++) {
          const page: { events: AuditEvent[]; follow: string } = await get<{ events: AuditEvent[]; follow: string }>('/v1/audit', { ...toQuery(applied), limit: PAGE, after: follow.current });
          if (stopped) return;
          follow.current = page.follow;
          const fresh = page.events.filter((e) => !seen.current.has(e.id));
          for (const e of fresh) seen.current.add(e.id);
          if (fresh.length) setEvents((old) => [...fresh.reverse(), ...old].slice(0, 1000));
          if (page.events.length < PAGE) break;
        }
        setError(null);
      } catch (err) {
        if (stopped) return;
        setError(err);
        // A place the server no longer takes (the database restored from a copy behind it): on from now.
        if (err instanceof ApiError && err.status === 400) {
          follow.current = (await get<{ follow: string }>('/v1/audit', { ...toQuery(applied), limit: 1 }).catch(() => null))?.follow ?? follow.current;
        }
      } finally {
        busy = false;
      }
    };
    const timer = setInterval(tick, LIVE_POLL_MS);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, [live, applied]);

  const more = async () => {
    if (!next) return;
    try {
      const page = await get<{ events: AuditEvent[]; next: string | null }>('/v1/audit', { ...toQuery(applied), limit: PAGE, cursor: next });
      const fresh = page.events.filter((e) => !seen.current.has(e.id));
      for (const e of fresh) seen.current.add(e.id);
      setEvents((old) => [...old, ...fresh]);
      setNext(page.next);
    } catch (err) {
      setError(err);
    }
  };

  const exportAs = async (format: 'csv' | 'jsonl') => {
    try {
      const name = await download('/v1/audit/export', { ...toQuery(applied), format }, `audit.${format}`);
      setExported(`Downloaded ${name}`);
    } catch (err) {
      setError(err);
    }
  };

  const field = (k: keyof Filters, label: string, placeholder = '') => (
    <div>
      <label for={ids[k]}>{label}</label>
      <input id={ids[k]} name={k} value={draft[k]} placeholder={placeholder} onInput={(e) => setDraft({ ...draft, [k]: e.currentTarget.value })} />
    </div>
  );

  return (
    <section aria-labelledby="audit-title">
      <h1 id="audit-title">Audit trail</h1>
      <p class="lede">Every decision (INTENT), every result the gateway reports (RESULT) and every operator action (ADMIN), append-only and hash-chained. Newest first.</p>
      <form
        class="filters"
        aria-label="Audit filters"
        onSubmit={(e) => {
          e.preventDefault();
          setApplied(draft);
        }}
      >
        {field('token', 'Token id', 'uuid')}
        <div>
          <label for={ids.type}>Token type</label>
          <select id={ids.type} name="type" value={draft.type} onChange={(e) => setDraft({ ...draft, type: e.currentTarget.value })}>
            <option value="">any</option>
            <option value="ro">read-only</option>
            <option value="rw">write</option>
            <option value="admin">admin</option>
          </select>
        </div>
        {field('session', 'Session id')}
        {field('server', 'Server', 'filesystem')}
        {field('tool', 'Tool', 'write_file')}
        <div>
          <label for={ids.decision}>Decision</label>
          <select id={ids.decision} name="decision" value={draft.decision} onChange={(e) => setDraft({ ...draft, decision: e.currentTarget.value })}>
            <option value="">any</option>
            <option value="allow">allow</option>
            <option value="deny">deny</option>
          </select>
        </div>
        <div>
          <label for={ids.code}>Code</label>
          <select id={ids.code} name="code" value={draft.code} onChange={(e) => setDraft({ ...draft, code: e.currentTarget.value })}>
            <option value="">any</option>
            {DECISION_CODES.map((c) => (
              <option key={c} value={c}>
                {c}
              </option>
            ))}
          </select>
        </div>
        <div>
          <label for={ids.kind}>Row kind</label>
          <select id={ids.kind} name="kind" value={draft.kind} onChange={(e) => setDraft({ ...draft, kind: e.currentTarget.value })}>
            <option value="">any</option>
            <option value="INTENT">INTENT (decision)</option>
            <option value="RESULT">RESULT</option>
            <option value="ADMIN">ADMIN (operator action)</option>
            <option value="APPROVAL">APPROVAL</option>
          </select>
        </div>
        <div class="datetime-field">
          <label for={ids.from}>From</label>
          <input id={ids.from} name="from" type="datetime-local" value={draft.from} onInput={(e) => setDraft({ ...draft, from: e.currentTarget.value })} />
        </div>
        <div class="datetime-field">
          <label for={ids.to}>To</label>
          <input id={ids.to} name="to" type="datetime-local" value={draft.to} onInput={(e) => setDraft({ ...draft, to: e.currentTarget.value })} />
        </div>
        <LocalZoneHint />
        <div class="filter-actions">
          <button type="submit" class="primary">
            Apply filters
          </button>
          <button
            type="button"
            onClick={() => {
              setDraft(EMPTY);
              setApplied(EMPTY);
            }}
          >
            Reset
          </button>
        </div>
      </form>
      <div class="toolbar">
        <label class="check">
          <input type="checkbox" checked={live} onChange={(e) => setLive(e.currentTarget.checked)} /> Live tail
          {live && <span class="live-dot" aria-hidden="true" />}
        </label>
        <span class="spacer" />
        <span class="hint" aria-live="polite">
          {exported}
        </span>
        <button type="button" onClick={() => exportAs('csv')}>
          Export CSV
        </button>
        <button type="button" onClick={() => exportAs('jsonl')}>
          Export JSON Lines
        </button>
      </div>
      <ErrorNote error={error} />
      {!loading && events.length === 0 && <Empty>No audit rows match these filters.</Empty>}
      {events.length > 0 && (
        <div class="table-wrap">
          <table class="audit">
            <caption class="sr-only">Audit rows</caption>
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Kind</th>
                <th scope="col">Actor</th>
                <th scope="col">Server / tool</th>
                <th scope="col">Decision</th>
                <th scope="col">Code</th>
                <th scope="col">Message</th>
                <th scope="col">
                  <span class="sr-only">Details</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {events.map((e) => (
                <Fragment key={e.id}>
                  <tr data-audit-id={e.id}>
                    <td>
                      <Time value={e.ts} />
                    </td>
                    <td>
                      <span class={`kind kind-${e.kind.toLowerCase()}`}>{e.kind}</span>
                    </td>
                    <td>
                      {e.actor_type === 'mcp_token' ? (
                        <>
                          <TokenBadge type={e.token_type} /> <IdRef id={e.token_id} label="token id" />
                        </>
                      ) : (
                        <span title={e.actor_id ?? ''}>
                          {e.actor_type} {e.actor_id && <IdRef id={e.actor_id} label="actor id" />}
                        </span>
                      )}
                    </td>
                    <td class="mono">{e.server ? `${e.server}/${e.tool ?? ''}` : (e.action ?? '')}</td>
                    <td>{e.decision && <span class={`pill pill-${e.decision}`}>{e.decision}</span>}</td>
                    <td class="mono">{e.code ?? e.result_status ?? ''}</td>
                    <td class="message">{e.message ?? e.summary ?? e.target ?? ''}</td>
                    <td>
                      <button type="button" class="small" aria-expanded={open === e.id} onClick={() => setOpen(open === e.id ? null : e.id)}>
                        {open === e.id ? 'Hide' : 'Details'}
                        {/* Each row's button its own name (the visible word first, WCAG 2.5.3): which row it opens. */}
                        <span class="sr-only">
                          {open === e.id ? ' details' : ''} of {utcText(new Date(e.ts))} {e.server ? `${e.server}/${e.tool ?? ''}` : (e.action ?? e.kind)}
                        </span>
                      </button>
                    </td>
                  </tr>
                  {open === e.id && (
                    <tr class="details-row">
                      <td colSpan={8}>
                        <dl class="facts">
                          <dt>Row</dt>
                          <dd class="mono">{e.id}</dd>
                          <dt>Decision id</dt>
                          <dd class="mono">{e.decision_id ?? '—'}</dd>
                          <dt>Session</dt>
                          <dd class="mono">{e.session_id ?? '—'}</dd>
                          <dt>Project · environment</dt>
                          <dd>
                            {e.project_id ?? '—'} · {e.environment ?? '—'}
                          </dd>
                          <dt>AI client</dt>
                          <dd>{e.ai_client ?? e.client_name ?? e.user_agent ?? '—'}</dd>
                          <dt>Purpose</dt>
                          <dd>{e.purpose ?? '—'}</dd>
                          <dt>Duration · bytes · rows</dt>
                          <dd>
                            {e.duration_ms ?? '—'} ms · {e.result_bytes ?? '—'} · {e.rows ?? '—'}
                          </dd>
                        </dl>
                        <div class="grid2">
                          <div>
                            <h2 class="sub">Arguments</h2>
                            <Json value={e.arguments} />
                          </div>
                          <div>
                            <h2 class="sub">Flags evaluated</h2>
                            <Json value={e.flags} />
                            {e.details !== null && e.details !== undefined && (
                              <>
                                <h2 class="sub">Details</h2>
                                <Json value={e.details} />
                              </>
                            )}
                          </div>
                        </div>
                      </td>
                    </tr>
                  )}
                </Fragment>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {next && (
        <div class="actions">
          <button type="button" onClick={more}>
            Load older rows
          </button>
        </div>
      )}
    </section>
  );
}
