import { useEffect, useId, useState } from 'preact/hooks';
import { download, get, type Query } from '../api';
import { Empty, ErrorNote, IdRef, isoFromLocal, LocalZoneHint, utcText } from '../components/ui';

// The shapes of src/incidents/schemas.ts (GET /v1/incidents/timeline).
interface TimelineEvent {
  at: string;
  type: string;
  source: 'audit' | 'alert' | 'kill';
  id: string;
  summary: string;
  actor: string | null;
  severity: string | null;
  decision: string | null;
  code: string | null;
  token_id: string | null;
  project_id: string | null;
  session_id: string | null;
  server: string | null;
  tool: string | null;
  kill_id: string | null;
  decision_id: string | null;
}

interface Timeline {
  from: string;
  to: string;
  target: string | null;
  events: TimelineEvent[];
  truncated: boolean;
  /** When truncated: the cursor of the next page (it carries the window, target and decisions). */
  next: string | null;
  counts: Record<string, number>;
}

type Decisions = 'all' | 'denials' | 'none';

/** A page after the first: the cursor that asks for it, and the number of its first event in the window. */
interface Opened {
  cursor: string;
  first: number;
}

interface Filters {
  /** datetime-local values (the person's local time); the API gets ISO. */
  from: string;
  to: string;
  target: string;
  decisions: Decisions;
}

const EMPTY: Filters = { from: '', to: '', target: '', decisions: 'all' };
const LIMIT = 1000;
const TARGET_PATTERN = '(server|token|project|session|environment):.+';

// Colours by what happened: stops in red, things ending a stop in green, the rest neutral.
const PILL: Record<string, string> = {
  denial: 'deny',
  kill: 'deny',
  revocation: 'revoked',
  flag_change: 'off',
  decision: 'allow',
  kill_lifted: 'approved',
  resume: 'approved',
  kill_expired: 'expired',
  alert: 'pending',
};

/** ISO → the value a datetime-local input shows (local time, to the second). */
function localFromIso(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Filters from the hash (`#/timeline?target=server:x&from=...`), so other pages can link to a view. */
function filtersFromHash(): Filters {
  const q = new URLSearchParams(location.hash.split('?')[1] ?? '');
  const decisions = q.get('decisions');
  return {
    from: q.get('from') ? localFromIso(q.get('from') ?? '') : '',
    to: q.get('to') ? localFromIso(q.get('to') ?? '') : '',
    target: q.get('target') ?? '',
    decisions: decisions === 'denials' || decisions === 'none' ? decisions : 'all',
  };
}

function toQuery(f: Filters): Query {
  return { from: isoFromLocal(f.from), to: isoFromLocal(f.to), target: f.target.trim() || undefined, decisions: f.decisions === 'all' ? undefined : f.decisions };
}

/**
 * Incident review wants exact times, not "3 minutes ago": to the millisecond, in UTC like the CSV export,
 * the CLI, the API and alerts, and saying so.
 */
function Stamp({ iso }: { iso: string }) {
  return (
    <time dateTime={iso} title={iso} class="mono">
      {utcText(new Date(iso), true)}
    </time>
  );
}

export function TimelinePage() {
  const [draft, setDraft] = useState<Filters>(filtersFromHash);
  const [applied, setApplied] = useState<Filters>(filtersFromHash);
  const [tick, setTick] = useState(0);
  // The pages opened after the first one (the last one is asked for); `shown`: those of the answer shown.
  const [cursors, setCursors] = useState<Opened[]>([]);
  const [shown, setShown] = useState<Opened[]>([]);
  const [data, setData] = useState<Timeline | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const [exported, setExported] = useState('');
  const prefix = useId();
  const ids = { from: `${prefix}-from`, to: `${prefix}-to`, target: `${prefix}-target`, targetHelp: `${prefix}-target-help`, decisions: `${prefix}-decisions` };

  // A link from another page (a kill's "Timeline") changes only the hash's query.
  useEffect(() => {
    const onHash = () => {
      const f = filtersFromHash();
      setDraft(f);
      setApplied(f);
      setCursors([]);
    };
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);

  useEffect(() => {
    let live = true;
    setLoading(true);
    const cursor = cursors.at(-1)?.cursor;
    get<Timeline>('/v1/incidents/timeline', cursor ? { cursor, limit: LIMIT } : { ...toQuery(applied), limit: LIMIT }).then(
      (t) => {
        if (!live) return;
        setData(t);
        setShown(cursors);
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
  }, [applied, tick, cursors]);

  const exportAs = async (format: 'csv' | 'jsonl') => {
    try {
      // The window the page shows (all of it, whichever page is shown), so the file matches what was
      // reviewed even if "to" was left empty (now).
      const q = { ...toQuery(applied), from: data?.from, to: data?.to, limit: 50_000, format };
      const name = await download('/v1/incidents/timeline', q, `incident-timeline.${format}`);
      setExported(`Downloaded ${name}`);
    } catch (err) {
      setError(err);
    }
  };

  const counts = data ? Object.entries(data.counts).filter(([, n]) => n > 0) : [];
  const first = shown.at(-1)?.first ?? 1;
  const next = data?.truncated ? data.next : null;
  const page = (opened: Opened[]) => {
    setCursors(opened);
    document.getElementById('timeline-title')?.scrollIntoView();
  };
  return (
    <section aria-labelledby="timeline-title">
      <h1 id="timeline-title">Incident timeline</h1>
      <p class="lede">
        Decisions, denials, alerts, kills and lifts, flag changes, revocations, rotations and resumes in one ordered view, oldest first. Without a window it shows the last hour; a target narrows it to
        what concerns one server, token, project, session or environment (kills that cover it and installation-wide events stay in).
      </p>
      <form
        class="filters"
        aria-label="Timeline filters"
        onSubmit={(e) => {
          e.preventDefault();
          setApplied(draft);
          setCursors([]);
          setTick((t) => t + 1);
        }}
      >
        <div class="datetime-field">
          <label for={ids.from}>From</label>
          <input id={ids.from} name="from" type="datetime-local" step={1} value={draft.from} onInput={(e) => setDraft({ ...draft, from: e.currentTarget.value })} />
        </div>
        <div class="datetime-field">
          <label for={ids.to}>To</label>
          <input id={ids.to} name="to" type="datetime-local" step={1} value={draft.to} onInput={(e) => setDraft({ ...draft, to: e.currentTarget.value })} />
        </div>
        <div>
          <label for={ids.target}>Target</label>
          <input
            id={ids.target}
            name="target"
            class="mono"
            value={draft.target}
            pattern={TARGET_PATTERN}
            title="server:<name>, token:<id>, project:<id>, session:<id> or environment:<name>"
            placeholder="server:filesystem"
            aria-describedby={ids.targetHelp}
            autoComplete="off"
            onInput={(e) => setDraft({ ...draft, target: e.currentTarget.value })}
          />
          <p class="hint" id={ids.targetHelp}>
            server:, token:, project:, session: or environment:
          </p>
        </div>
        <div>
          <label for={ids.decisions}>Decisions</label>
          <select id={ids.decisions} name="decisions" value={draft.decisions} onChange={(e) => setDraft({ ...draft, decisions: e.currentTarget.value as Decisions })}>
            <option value="all">all</option>
            <option value="denials">denials only</option>
            <option value="none">none</option>
          </select>
        </div>
        <LocalZoneHint />
        <div class="filter-actions">
          <button type="submit" class="primary">
            Show
          </button>
          <button
            type="button"
            onClick={() => {
              setDraft(EMPTY);
              setApplied(EMPTY);
              setCursors([]);
            }}
          >
            Reset
          </button>
        </div>
      </form>
      <div class="toolbar">
        {data && (
          <span class="hint" data-testid="timeline-window">
            <Stamp iso={data.from} /> → <Stamp iso={data.to} />
            {data.target ? (
              <>
                {' '}
                · <span class="mono">{data.target}</span>
              </>
            ) : null}
            {counts.length > 0 && ` · ${counts.map(([k, n]) => `${k.replace('_', ' ')}: ${n}`).join(', ')}`}
          </span>
        )}
        <span class="spacer" />
        <span class="hint" aria-live="polite">
          {exported}
        </span>
        <button type="button" onClick={() => exportAs('jsonl')} disabled={!data}>
          Export JSON Lines
        </button>
        <button type="button" onClick={() => exportAs('csv')} disabled={!data}>
          Export CSV
        </button>
      </div>
      <ErrorNote error={error} />
      {!loading && data && data.events.length === 0 && <Empty>Nothing happened in this window{data.target ? ' for this target' : ''}.</Empty>}
      {data && data.events.length > 0 && (
        <div class="table-wrap">
          <table class="timeline" aria-busy={loading}>
            <caption class="sr-only">Incident timeline events, oldest first</caption>
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">What</th>
                <th scope="col">Summary</th>
                <th scope="col">Who</th>
                <th scope="col">Server / tool</th>
                <th scope="col">Token · session</th>
              </tr>
            </thead>
            <tbody>
              {data.events.map((e) => (
                <tr key={`${e.source}:${e.id}:${e.type}`} data-event-type={e.type} data-event-id={e.id}>
                  <td>
                    <Stamp iso={e.at} />
                  </td>
                  <td>
                    <span class={`pill pill-${PILL[e.type] ?? 'closed'}`}>{e.type.replace('_', ' ')}</span>
                    {e.code && <span class="mono"> {e.code}</span>}
                  </td>
                  <td class="message">{e.summary}</td>
                  <td class="mono">{e.actor ?? '—'}</td>
                  <td class="mono">{e.server ? `${e.server}${e.tool ? `/${e.tool}` : ''}` : '—'}</td>
                  <td class="mono">
                    <IdRef id={e.token_id} label="token id" /> · <IdRef id={e.session_id} label="session id" />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {data && (data.truncated || shown.length > 0) && (
        <div class="actions">
          <p class="hint" data-testid="timeline-page">
            {data.events.length > 0 ? `Events ${first}–${first + data.events.length - 1} of this window` : 'No more events in this window'}
            {data.truncated ? '; more follow.' : '.'}
          </p>
          {shown.length > 0 && (
            <button type="button" onClick={() => page(shown.slice(0, -1))}>
              Previous {LIMIT} events
            </button>
          )}
          {next && (
            <button type="button" onClick={() => page([...shown, { cursor: next, first: first + (data?.events.length ?? 0) }])}>
              Next {LIMIT} events
            </button>
          )}
        </div>
      )}
    </section>
  );
}
