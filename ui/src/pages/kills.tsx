import { useId, useRef, useState } from 'preact/hooks';
import { api, get, post } from '../api';
import { Empty, ErrorNote, Freshness, IdRef, invalidMarker, isConflict, REFRESH_MS, ReasonDialog, Time, useLoad, useMissingFields, useTokenDescriptions } from '../components/ui';
import type { OperatorKey } from '../types';

// The shapes of src/kills/schemas.ts (POST/GET/DELETE /v1/kills).
export type KillTarget = 'everything' | 'server' | 'capability' | 'token' | 'project' | 'role' | 'environment' | 'session';
type Capability = 'read' | 'write' | 'delete';
type Environment = 'development' | 'staging' | 'production';
type KillState = 'active' | 'lifted' | 'expired';

export interface Kill {
  id: string;
  target: KillTarget;
  target_key: string;
  description: string;
  server: string | null;
  capability: Capability | null;
  token_id: string | null;
  project_id: string | null;
  role: string | null;
  environment: Environment | null;
  session_id: string | null;
  reason: string;
  created_by: string;
  created_at: string;
  expires_at: string | null;
  lifted_at: string | null;
  lifted_by: string | null;
  lift_reason: string | null;
  state: KillState;
}

const TARGETS: { id: KillTarget; label: string; help: string }[] = [
  { id: 'server', label: 'A server', help: 'Every call to one MCP server of the policy.' },
  { id: 'capability', label: 'A capability', help: 'Every read, write or delete, everywhere or on one server.' },
  { id: 'token', label: 'An agent token', help: 'Every call made with one token.' },
  { id: 'session', label: 'A session', help: 'Every call of one agent session.' },
  { id: 'project', label: 'A project', help: 'Every call of every token of one project.' },
  { id: 'role', label: 'A role', help: 'Every token with one role of the policy.' },
  { id: 'environment', label: 'An environment', help: 'Every call in development, staging or production.' },
  { id: 'everything', label: 'Everything', help: 'Every call of every agent, on every server.' },
];

// Seconds; '' = until an operator lifts it (the API's default). The API accepts up to 30 days.
const EXPIRY_CHOICES: { value: string; label: string }[] = [
  { value: '', label: 'Until lifted' },
  { value: '900', label: '15 minutes' },
  { value: '3600', label: '1 hour' },
  { value: '14400', label: '4 hours' },
  { value: '86400', label: '24 hours' },
  { value: '604800', label: '7 days' },
];

/** The incident timeline filter that shows what a kill stopped (the timeline has no capability or role filter). */
export function timelineTargetOf(k: Pick<Kill, 'server' | 'token_id' | 'project_id' | 'session_id' | 'environment'>): string | null {
  if (k.session_id) return `session:${k.session_id}`;
  if (k.token_id) return `token:${k.token_id}`;
  if (k.project_id) return `project:${k.project_id}`;
  if (k.server) return `server:${k.server}`;
  if (k.environment) return `environment:${k.environment}`;
  return null;
}

function timelineHref(k: Kill): string {
  const target = timelineTargetOf(k);
  // From a minute before the kill, so the calls that led to it are in view.
  const from = new Date(new Date(k.created_at).getTime() - 60_000).toISOString();
  const q = new URLSearchParams({ from, ...(target ? { target } : {}) });
  return `#/timeline?${q.toString()}`;
}

export function KillsPage() {
  const [state, setState] = useState<KillState | 'all'>('active');
  const [notice, setNotice] = useState('');
  const noticeRef = useRef<HTMLDivElement>(null);
  const [unenforced, setUnenforced] = useState(false);
  const [lifting, setLifting] = useState<Kill | null>(null);
  const list = useLoad(() => get<{ kills: Kill[]; next_before: string | null }>('/v1/kills', { state, limit: 200 }), [state], { refreshMs: REFRESH_MS });
  // Names of operator keys, for "By": only owners may list them; others see the stored actor.
  const operators = useLoad(() => get<{ keys: OperatorKey[] }>('/v1/operator-keys').catch(() => ({ keys: [] as OperatorKey[] })), []);
  const descriptions = useTokenDescriptions();
  const stateId = useId();
  const actor = (by: string | null) => {
    const key = by?.startsWith('operator:') ? operators.data?.keys.find((k) => k.id === by.slice('operator:'.length)) : undefined;
    return key ? (
      <span title={by ?? ''}>
        {key.name} <span class="muted">(operator key)</span>
      </span>
    ) : (
      <span class="mono">{by}</span>
    );
  };

  return (
    <section aria-labelledby="kills-title">
      <h1 id="kills-title">Kills</h1>
      <p class="lede">
        A kill stops matching calls on every replica at once, without Unleash: the next decision it matches is denied with <code>KILL_SWITCH</code> and the reason below. It stays until an operator
        lifts it (with a reason) or its expiry passes. Every kill and lift is audited and alerted.
      </p>
      <CreateKill
        onCreated={(res) => {
          setNotice(res.message);
          setUnenforced(!res.enforced);
          list.reload();
          // The form's submit button, which had the focus, is disabled as the form resets: the focus
          // would fall to <body>. It goes to what the kill did instead.
          requestAnimationFrame(() => noticeRef.current?.focus());
        }}
      />
      <div class="notice" aria-live="polite" data-testid="kill-notice" tabIndex={-1} ref={noticeRef}>
        {notice && <p>{notice}</p>}
        {unenforced && (
          <p class="error-note">
            Redis did not take this kill: decisions are denied anyway while Redis is away (fail closed), and the kill is applied from Postgres as soon as it is back.
          </p>
        )}
      </div>
      <h2>{state === 'active' ? 'Kills in force' : 'Kills'}</h2>
      <div class="toolbar">
        <label for={stateId}>State</label>
        <select id={stateId} value={state} onChange={(e) => setState(e.currentTarget.value as KillState | 'all')}>
          <option value="active">in force</option>
          <option value="lifted">lifted</option>
          <option value="expired">expired</option>
          <option value="all">all</option>
        </select>
        <span class="spacer" />
        <Freshness list={list} />
      </div>
      <ErrorNote error={list.error} />
      {list.data && list.data.kills.length === 0 && <Empty>{state === 'active' ? 'No kill is in force.' : 'No kills.'}</Empty>}
      {list.data && list.data.kills.length > 0 && (
        <div class="table-wrap">
          <table class="kills">
            <caption class="sr-only">Kills</caption>
            <thead>
              <tr>
                <th scope="col">Target</th>
                <th scope="col">Reason</th>
                <th scope="col">By</th>
                <th scope="col">Since</th>
                <th scope="col">Expires</th>
                <th scope="col">State</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.data.kills.map((k) => (
                <tr key={k.id} data-kill-id={k.id} data-target-key={k.target_key}>
                  <td>
                    <strong>{k.description}</strong>
                    {k.token_id && descriptions.get(k.token_id) && <span class="token-description"> “{descriptions.get(k.token_id)}”</span>}
                    <br />
                    {k.token_id || k.session_id ? (
                      <span class="muted">
                        {k.token_id ? 'token' : 'session'} <IdRef id={k.token_id ?? k.session_id} label={k.token_id ? 'token id' : 'session id'} />
                      </span>
                    ) : (
                      <span class="mono muted" title={k.id}>
                        {k.target_key}
                      </span>
                    )}
                  </td>
                  <td class="message">{k.reason}</td>
                  <td>{actor(k.created_by)}</td>
                  <td>
                    <Time value={k.created_at} />
                  </td>
                  <td>{k.expires_at ? <Time value={k.expires_at} /> : <span class="muted">until lifted</span>}</td>
                  <td>
                    <span class={`pill pill-${k.state === 'active' ? 'halted' : k.state}`}>{k.state === 'active' ? 'in force' : k.state}</span>
                    {k.lifted_at && (
                      <span class="hint">
                        {' '}
                        by {actor(k.lifted_by)} <Time value={k.lifted_at} />: {k.lift_reason}
                      </span>
                    )}
                  </td>
                  <td class="row-actions">
                    {k.state === 'active' && (
                      <button type="button" class="small danger" aria-label={`Lift the kill of ${k.description} (${k.reason})`} onClick={() => setLifting(k)}>
                        Lift
                      </button>
                    )}{' '}
                    <a class="small" href={timelineHref(k)} aria-label={`Timeline of ${k.description}`}>
                      Timeline
                    </a>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {lifting && (
        <ReasonDialog
          title="Lift this kill?"
          confirmLabel="Lift kill"
          danger
          reasonLabel="Why is it safe to let these calls through again? (audited)"
          onClose={() => setLifting(null)}
          onConfirm={async (reason) => {
            try {
              const res = await api<{ kill: Kill; message: string }>('DELETE', `/v1/kills/${lifting.id}`, { reason });
              setNotice(res.message);
            } catch (err) {
              // Lifted (or expired) meanwhile, from the CLI or another tab: show the list as it is now.
              if (!isConflict(err)) throw err;
              setNotice(`${err.explanation} The list is reloaded.`);
            }
            setUnenforced(false);
            list.reload();
          }}
        >
          <p>
            Kill of <strong>{lifting.description}</strong> (<span class="mono">{lifting.target_key}</span>), by {actor(lifting.created_by)}: “{lifting.reason}”.
          </p>
          <p>Calls it stops are decided normally again (other kills of the same target stay in force).</p>
        </ReasonDialog>
      )}
    </section>
  );
}

interface Created {
  kill: Kill;
  enforced: boolean;
  message: string;
}

function CreateKill({ onCreated }: { onCreated: (res: Created) => void }) {
  const [target, setTarget] = useState<KillTarget>('server');
  const [server, setServer] = useState('');
  const [capability, setCapability] = useState<Capability>('write');
  const [tokenId, setTokenId] = useState('');
  const [sessionId, setSessionId] = useState('');
  const [project, setProject] = useState('');
  const [role, setRole] = useState('');
  const [environment, setEnvironment] = useState<Environment>('production');
  const [reason, setReason] = useState('');
  const [expiry, setExpiry] = useState('');
  const [everythingConfirmed, setEverythingConfirmed] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const prefix = useId();
  const ids = {
    target: `${prefix}-target`,
    help: `${prefix}-help`,
    server: `${prefix}-server`,
    capability: `${prefix}-capability`,
    token: `${prefix}-token`,
    session: `${prefix}-session`,
    project: `${prefix}-project`,
    role: `${prefix}-role`,
    env: `${prefix}-env`,
    reason: `${prefix}-reason`,
    expiry: `${prefix}-expiry`,
    everything: `${prefix}-everything`,
  };

  // Only the field(s) of the chosen target go to the API: the others would be rejected as ambiguous.
  const body = (): Record<string, unknown> => {
    const b: Record<string, unknown> = { target, reason: reason.trim() };
    if (target === 'server') b['server'] = server.trim();
    if (target === 'capability') {
      b['capability'] = capability;
      if (server.trim()) b['server'] = server.trim();
    }
    if (target === 'token') b['token_id'] = tokenId.trim();
    if (target === 'session') b['session_id'] = sessionId.trim();
    if (target === 'project') b['project_id'] = project.trim();
    if (target === 'role') b['role'] = role.trim();
    if (target === 'environment') b['environment'] = environment;
    if (expiry) b['expires_in'] = Number(expiry);
    return b;
  };

  // What is missing, field → what to do. The submit button stays enabled (a disabled one says nothing
  // about why): a submit names what is missing and marks those fields.
  const gaps = new Map<string, string>();
  if (reason.trim() === '') gaps.set(ids.reason, 'Give a reason: it is shown in every denial the kill causes.');
  if (target === 'everything' && !everythingConfirmed) gaps.set(ids.everything, 'Tick “I mean it” to confirm killing everything.');
  // The field the API refused is marked invalid and described by the error (a screen reader reads both).
  const errorId = `${prefix}-error`;
  const missing = useMissingFields(gaps, errorId, 'No kill made yet');

  const submit = async (e: Event) => {
    e.preventDefault();
    if (busy) return;
    if (missing.refuse()) {
      setError(null);
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const res = await post<Created>('/v1/kills', body());
      // A clean form for the next kill: nothing of this one (its expiry above all) carries over unseen.
      setTarget('server');
      setServer('');
      setCapability('write');
      setTokenId('');
      setSessionId('');
      setProject('');
      setRole('');
      setEnvironment('production');
      setReason('');
      setExpiry('');
      setEverythingConfirmed(false);
      onCreated(res);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  const help = TARGETS.find((t) => t.id === target)?.help ?? '';
  const invalid = invalidMarker(error, errorId);
  return (
    <form class="filters kill-form" aria-labelledby={`${prefix}-title`} onSubmit={submit}>
      <h2 id={`${prefix}-title`} class="wide-field">
        Create a kill
      </h2>
      <div>
        <label for={ids.target}>Stop</label>
        <select id={ids.target} name="target" value={target} aria-describedby={ids.help} onChange={(e) => setTarget(e.currentTarget.value as KillTarget)}>
          {TARGETS.map((t) => (
            <option key={t.id} value={t.id}>
              {t.label}
            </option>
          ))}
        </select>
        <p class="hint" id={ids.help}>
          {help}
        </p>
      </div>
      {target === 'capability' && (
        <div>
          <label for={ids.capability}>Capability</label>
          <select id={ids.capability} name="capability" value={capability} onChange={(e) => setCapability(e.currentTarget.value as Capability)}>
            <option value="read">read</option>
            <option value="write">write</option>
            <option value="delete">delete</option>
          </select>
        </div>
      )}
      {(target === 'server' || target === 'capability') && (
        <div>
          <label for={ids.server}>{target === 'server' ? 'Server' : 'On server (optional)'}</label>
          <input
            id={ids.server}
            name="server"
            value={server}
            required={target === 'server'}
            pattern="[a-z0-9][a-z0-9_\-]{0,62}"
            title="A server name of the policy file: lower-case letters, digits, _ and -, starting with a letter or digit"
            {...invalid('server')}
            placeholder="filesystem"
            autoComplete="off"
            onInput={(e) => setServer(e.currentTarget.value)}
          />
        </div>
      )}
      {target === 'token' && (
        <div>
          <label for={ids.token}>Agent token id</label>
          <input id={ids.token} name="token_id" class="mono" value={tokenId} required {...invalid('token_id')} placeholder="uuid (Tokens page)" autoComplete="off" onInput={(e) => setTokenId(e.currentTarget.value)} />
        </div>
      )}
      {target === 'session' && (
        <div>
          <label for={ids.session}>Session id</label>
          <input id={ids.session} name="session_id" class="mono" value={sessionId} required {...invalid('session_id')} placeholder="uuid (Sessions page)" autoComplete="off" onInput={(e) => setSessionId(e.currentTarget.value)} />
        </div>
      )}
      {target === 'project' && (
        <div>
          <label for={ids.project}>Project id</label>
          <input id={ids.project} name="project_id" value={project} required pattern="[A-Za-z0-9._\-]+" title="A project id: letters, digits, dot, _ and -" {...invalid('project_id')} placeholder="billing" autoComplete="off" onInput={(e) => setProject(e.currentTarget.value)} />
        </div>
      )}
      {target === 'role' && (
        <div>
          <label for={ids.role}>Role (from the policy file)</label>
          <input id={ids.role} name="role" value={role} required pattern="[A-Za-z0-9._\-]{1,100}" title="A role of the policy file: letters, digits, dot, _ and -" {...invalid('role')} placeholder="code_agent" autoComplete="off" onInput={(e) => setRole(e.currentTarget.value)} />
        </div>
      )}
      {target === 'environment' && (
        <div>
          <label for={ids.env}>Environment</label>
          <select id={ids.env} name="environment" value={environment} onChange={(e) => setEnvironment(e.currentTarget.value as Environment)}>
            <option value="development">development</option>
            <option value="staging">staging</option>
            <option value="production">production</option>
          </select>
        </div>
      )}
      <div class="wide-field">
        <label for={ids.reason}>Reason (shown in every denial it causes, in the audit trail and in the alert)</label>
        <input id={ids.reason} name="reason" value={reason} required maxLength={1000} {...invalid('reason')} {...missing.field(ids.reason)} placeholder="e.g. agent deleting files in a loop, INC-42" onInput={(e) => setReason(e.currentTarget.value)} />
      </div>
      <div>
        <label for={ids.expiry}>Expires</label>
        <select id={ids.expiry} name="expires_in" value={expiry} onChange={(e) => setExpiry(e.currentTarget.value)}>
          {EXPIRY_CHOICES.map((c) => (
            <option key={c.value} value={c.value}>
              {c.label}
            </option>
          ))}
        </select>
      </div>
      {target === 'everything' && (
        <div class="write-warning wide-field">
          <label class="check">
            <input id={ids.everything} type="checkbox" checked={everythingConfirmed} {...missing.field(ids.everything)} onChange={(e) => setEverythingConfirmed(e.currentTarget.checked)} /> I mean it: deny every call of every agent until this kill is lifted
            or expires.
          </label>
        </div>
      )}
      <ErrorNote error={error ?? missing.note} id={errorId} />
      <div class="filter-actions">
        <button type="submit" class="danger" disabled={busy}>
          {target === 'everything' ? 'Kill everything' : 'Create kill'}
        </button>
      </div>
    </form>
  );
}
