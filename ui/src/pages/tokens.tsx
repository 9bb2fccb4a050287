import type { ComponentChildren } from 'preact';
import { useEffect, useId, useMemo, useState } from 'preact/hooks';
import { ApiError, get, post } from '../api';
import { Dialog, Empty, ErrorNote, Freshness, IdRef, invalidMarker, REFRESH_MS, ReasonDialog, SecretOnce, Tabs, Time, TokenBadge, TYPE_LABEL, useLoad, useMissingFields, WarningIcon } from '../components/ui';
import { revokeNotice } from '../revoke-notice';
import type { AgentToken, Environment, GatewayKey, OperatorKey, OperatorRole, ScopeCatalogue, TokenType } from '../types';
import type { Kill } from './kills';

type Tab = 'agent' | 'gateway' | 'operator';

// Shown when the catalogue could not be read; the API sends the same text.
const WRITE_RISK_WARNING = 'This AI can modify your data. Only grant to trusted systems.';

const EXPIRY_CHOICES: { label: string; seconds: number | undefined }[] = [
  { label: 'Never', seconds: undefined },
  { label: '1 day', seconds: 86_400 },
  { label: '7 days', seconds: 7 * 86_400 },
  { label: '30 days', seconds: 30 * 86_400 },
  { label: '90 days', seconds: 90 * 86_400 },
  { label: '1 year', seconds: 365 * 86_400 },
];

function status(k: { revoked_at: string | null; expires_at: string | null }): 'active' | 'revoked' | 'expired' {
  if (k.revoked_at) return 'revoked';
  if (k.expires_at && new Date(k.expires_at).getTime() <= Date.now()) return 'expired';
  return 'active';
}

/** A scope that lets the token change something (its badge is marked, not only coloured). */
function isWriteScope(scope: string): boolean {
  return /:(insert|update|write|delete|run|mutate|\*)$/.test(scope);
}

function StatusPill({ value }: { value: 'active' | 'revoked' | 'expired' }) {
  return <span class={`pill pill-${value}`}>{value}</span>;
}

/** The kills in force that stop every call of this token (server and capability kills stop only some). */
function killsOf(k: AgentToken, kills: Kill[]): Kill[] {
  return kills.filter(
    (x) =>
      x.target === 'everything' ||
      (x.target === 'token' && x.token_id === k.id) ||
      (x.target === 'project' && x.project_id === k.project_id) ||
      (x.target === 'role' && x.role === k.role) ||
      (x.target === 'environment' && x.environment === k.environment),
  );
}

export function TokensPage() {
  const [tab, setTab] = useState<Tab>('agent');
  return (
    <section aria-labelledby="tokens-title">
      <h1 id="tokens-title">Tokens and keys</h1>
      <Tabs
        label="Kinds of credential"
        current={tab}
        onChange={setTab}
        tabs={[
          { id: 'agent', label: 'Agent tokens' },
          { id: 'gateway', label: 'Gateway keys' },
          { id: 'operator', label: 'Operator keys' },
        ]}
      />
      <div role="tabpanel" id={`tabpanel-${tab}`} aria-labelledby={`tab-${tab}`}>
        {tab === 'agent' && <AgentTokens />}
        {tab === 'gateway' && <GatewayKeys />}
        {tab === 'operator' && <OperatorKeys />}
      </div>
    </section>
  );
}

function AgentTokens() {
  const [showRevoked, setShowRevoked] = useState(false);
  const [type, setType] = useState<TokenType | ''>('');
  const [creating, setCreating] = useState(false);
  const [revoking, setRevoking] = useState<AgentToken | null>(null);
  const [notice, setNotice] = useState('');
  const list = useLoad(() => get<{ keys: AgentToken[] }>('/v1/keys', { revoked: showRevoked ? undefined : false, type: type || undefined, limit: 500 }), [showRevoked, type], {
    refreshMs: REFRESH_MS,
  });
  const kills = useLoad(() => get<{ kills: Kill[] }>('/v1/kills', { state: 'active', limit: 200 }), [], { refreshMs: REFRESH_MS });
  const catalogue = useLoad(() => get<ScopeCatalogue>('/v1/scopes'), []);
  // The policy's roles, offered in the Create token form (a typo there gives a token whose calls are all refused).
  const policy = useLoad(() => get<{ roles: string[] }>('/v1/policy'), []);

  return (
    <>
      <p class="lede">
        Agent tokens are the identity of an AI client. <strong>Read-only</strong> is the default; <strong>write</strong> and <strong>admin</strong> tokens can change data and carry a warning sign.
        The token guide (<code>docs/tokens.md</code>) says which to use when.
      </p>
      <div class="toolbar">
        <label>
          Type{' '}
          <select value={type} onChange={(e) => setType(e.currentTarget.value as TokenType | '')}>
            <option value="">all</option>
            <option value="ro">read-only</option>
            <option value="rw">write</option>
            <option value="admin">admin</option>
          </select>
        </label>
        <label class="check">
          <input type="checkbox" checked={showRevoked} onChange={(e) => setShowRevoked(e.currentTarget.checked)} /> Show revoked
        </label>
        <span class="spacer" />
        <Freshness list={list} />
        <button type="button" class="primary" onClick={() => setCreating(true)}>
          Create token
        </button>
      </div>
      <ErrorNote error={list.error} />
      {/* What the last action did, read out by screen readers (its row is gone). */}
      <div class="notice" aria-live="polite" data-testid="token-notice">
        {notice && <p>{notice}</p>}
      </div>
      {list.data && list.data.keys.length === 0 && <Empty>No agent tokens yet. Create a read-only one to start.</Empty>}
      {list.data && list.data.keys.length > 0 && (
        <div class="table-wrap">
          <table class="tokens">
            <caption class="sr-only">Agent tokens</caption>
            <thead>
              <tr>
                <th scope="col">Type</th>
                <th scope="col">Token</th>
                <th scope="col">Description</th>
                <th scope="col">Role · project</th>
                <th scope="col">Environment</th>
                <th scope="col">Scopes</th>
                <th scope="col">Created</th>
                <th scope="col">Last used</th>
                <th scope="col">Status</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.data.keys.map((k) => (
                <tr key={k.id} data-token-id={k.id}>
                  <td>
                    <TokenBadge type={k.type} />
                  </td>
                  <td>
                    <IdRef id={k.id} label="token id" text={`${k.display_prefix}…`} />
                  </td>
                  <td>{k.description || <span class="muted">no description</span>}</td>
                  <td>
                    {k.role} · {k.project_id}
                  </td>
                  <td>
                    <span class={`env env-${k.environment}`}>{k.environment}</span>
                  </td>
                  <td>
                    <ul class="scopes">
                      {k.scopes.map((s) =>
                        // Not by colour alone (WCAG 1.4.1): a visible mark, and "(write)" for screen readers.
                        isWriteScope(s) ? (
                          <li key={s} class="scope scope-write" data-write-scope="">
                            {/* An SVG pencil, not ✎ (Debian's default fonts may draw it as a box). */}
                            <svg class="scope-write-mark" viewBox="0 0 16 16" width="11" height="11" aria-hidden="true" focusable="false">
                              <path d="M11 2.5l2.5 2.5L6 12.5 3 13l.5-3L11 2.5Z" fill="none" stroke="currentColor" stroke-width="1.6" stroke-linejoin="round" />
                            </svg>
                            {s}
                            <span class="sr-only"> (write)</span>
                          </li>
                        ) : (
                          <li key={s} class="scope">
                            {s}
                          </li>
                        ),
                      )}
                    </ul>
                  </td>
                  <td>
                    <Time value={k.created_at} />
                  </td>
                  <td>
                    <Time value={k.last_used_at} empty="never" />
                  </td>
                  <td>
                    <StatusPill value={status(k)} />
                    {k.halt && !k.revoked_at && (
                      <a class="pill pill-halted" href="#/sessions" data-testid="token-halted" title={`Halted since ${k.halt.halted_at}: resume it on the Sessions page`}>
                        halted ({k.halt.trigger})
                      </a>
                    )}
                    {!k.revoked_at &&
                      killsOf(k, kills.data?.kills ?? []).map((x) => (
                        <a key={x.id} class="pill pill-halted" href="#/kills" data-testid="token-killed" title={`${x.description}: ${x.reason}`}>
                          killed ({x.target})
                        </a>
                      ))}
                  </td>
                  <td>
                    {!k.revoked_at && (
                      <button type="button" class="danger small" onClick={() => setRevoking(k)} aria-label={`Revoke ${TYPE_LABEL[k.type]} token ${k.display_prefix}`}>
                        Revoke
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {creating && <CreateAgentToken catalogue={catalogue.data} roles={policy.data?.roles ?? []} onClose={() => setCreating(false)} onCreated={list.reload} />}
      {revoking && (
        <ReasonDialog
          title="Revoke this token?"
          confirmLabel="Revoke token"
          danger
          onClose={() => setRevoking(null)}
          onConfirm={async (reason) => {
            const answer = await post<{ announced?: boolean; warning?: string }>(`/v1/keys/${revoking.id}/revoke`, { reason });
            setNotice(revokeNotice(revoking.display_prefix, answer));
            list.reload();
          }}
        >
          <p>
            <TokenBadge type={revoking.type} /> <span class="mono">{revoking.display_prefix}…</span> {revoking.description}
          </p>
          <p>Every replica refuses it within a second. Gateways using it get 401; this cannot be undone.</p>
        </ReasonDialog>
      )}
    </>
  );
}

const TYPE_HELP: Record<TokenType, string> = {
  ro: 'Reads only: db:select, storage:read, realtime:subscribe. For assistants, code generation and analysis.',
  rw: 'Adds db:insert, db:update, storage:write. For trusted automations that must change data.',
  admin: 'Every scope, including deletes, secrets:read and auth:* (user management). For supervised ops tools only.',
};

function CreateAgentToken({ catalogue, roles, onClose, onCreated }: { catalogue: ScopeCatalogue | undefined; roles: string[]; onClose: () => void; onCreated: () => void }) {
  const [type, setType] = useState<TokenType>('ro');
  const [role, setRole] = useState('code_agent');
  const [project, setProject] = useState('');
  const [environment, setEnvironment] = useState<Environment>('development');
  const [description, setDescription] = useState('');
  const [expiry, setExpiry] = useState(0);
  const [scopes, setScopes] = useState<string[] | null>(null);
  const [acknowledged, setAcknowledged] = useState(false);
  const [confirmAdmin, setConfirmAdmin] = useState(false);
  const [confirmProject, setConfirmProject] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [created, setCreated] = useState<{ token: string; key: AgentToken; warning?: string } | null>(null);
  const ids = { role: useId(), roles: useId(), project: useId(), env: useId(), desc: useId(), expiry: useId(), ack: useId(), admin: useId(), confirmProject: useId(), warning: useId(), error: useId() };

  const allowed = useMemo(() => (catalogue ? catalogue.scopes.filter((s) => s.allowed_types.includes(type)) : []), [catalogue, type]);
  const chosen = scopes ?? catalogue?.defaults[type] ?? [];
  const writes = type !== 'ro';
  const projectOk = /^[A-Za-z0-9._-]+$/.test(project);
  // What is missing, field → what to do. Create stays enabled (a disabled button says nothing about why):
  // a submit names what is missing and marks those fields.
  const gaps = new Map<string, string>();
  if (!projectOk) gaps.set(ids.project, 'Give a project id (letters, digits, dot, _ and -).');
  if (role.trim() === '') gaps.set(ids.role, 'Give a role from the policy file.');
  if (writes && !acknowledged) gaps.set(ids.ack, 'Tick “I understand that this AI can modify data” under the warning.');
  if (type === 'admin' && !confirmAdmin) gaps.set(ids.admin, 'Tick “I confirm this AI gets full access”.');
  if (type === 'admin' && confirmProject !== project) gaps.set(ids.confirmProject, 'Type the project id again, exactly as above.');
  const missing = useMissingFields(gaps, ids.error, 'Not created yet');
  const invalid = invalidMarker(error, ids.error);
  // Changing the type resets the scopes to that type's defaults and every confirmation.
  useEffect(() => {
    setScopes(null);
    setAcknowledged(false);
    setConfirmAdmin(false);
    setConfirmProject('');
    missing.reset();
  }, [type]);

  const submit = async (e: Event) => {
    e.preventDefault();
    if (busy) return;
    if (missing.refuse()) {
      setError(null);
      return;
    }
    setBusy(true);
    setError(null);
    const body: Record<string, unknown> = { type, role: role.trim(), project_id: project, environment };
    if (description.trim()) body['description'] = description.trim();
    if (scopes) body['scopes'] = scopes;
    const seconds = EXPIRY_CHOICES[expiry]?.seconds;
    if (seconds) body['expires_in'] = seconds;
    if (writes) body['acknowledge_write_risk'] = acknowledged;
    if (type === 'admin') Object.assign(body, { confirm_admin: confirmAdmin, confirm_project_id: confirmProject });
    try {
      setCreated(await post<{ token: string; key: AgentToken; warning?: string }>('/v1/keys', body));
      onCreated();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  if (created) {
    // The API's warning beyond the write risk acknowledged in the form: a role the policy does not define
    // (every call of the token is refused and the first one halts it; first-time user review).
    const writeRisk = catalogue?.write_risk_warning ?? WRITE_RISK_WARNING;
    const warning = created.warning?.replace(writeRisk, '').trim();
    return (
      <Dialog title="Token created" onClose={onClose}>
        {warning && (
          <div class="write-warning" role="alert" data-testid="created-warning">
            <WarningIcon label="Warning" />
            <p>
              <strong>{warning}</strong>
            </p>
          </div>
        )}
        <p>
          <TokenBadge type={created.key.type} /> for <strong>{created.key.role}</strong> in project <strong>{created.key.project_id}</strong> ({created.key.environment}).
        </p>
        <SecretOnce value={created.token} label="Agent token" />
        <p class="hint">Give it to the AI client as X-Agent-Token through your gateway (docs/gateway.md), never to the control plane's admin API.</p>
        <div class="actions">
          <button type="button" class="primary" onClick={onClose}>
            Done
          </button>
        </div>
      </Dialog>
    );
  }

  return (
    <Dialog title="Create an agent token" onClose={onClose} wide>
      <form onSubmit={submit}>
        <fieldset class="type-choice">
          <legend>Type</legend>
          {(['ro', 'rw', 'admin'] as const).map((t) => (
            <label key={t} class={`type-option ${type === t ? 'selected' : ''}`}>
              <input type="radio" name="token-type" value={t} checked={type === t} onChange={() => setType(t)} />
              <TokenBadge type={t} />
              <span class="hint">{TYPE_HELP[t]}</span>
            </label>
          ))}
        </fieldset>

        {writes && (
          <div class="write-warning" role="alert" id={ids.warning}>
            <WarningIcon label="Warning" />
            <p>
              <strong>{catalogue?.write_risk_warning ?? WRITE_RISK_WARNING}</strong>
            </p>
            <label class="check" for={ids.ack}>
              <input id={ids.ack} type="checkbox" checked={acknowledged} {...missing.field(ids.ack, ids.warning)} onChange={(e) => setAcknowledged(e.currentTarget.checked)} /> I understand that this AI can
              modify data, and I trust the system that will hold this token.
            </label>
          </div>
        )}

        <div class="grid2">
          <div>
            <label for={ids.project}>Project id</label>
            <input id={ids.project} {...invalid('project_id')} {...missing.field(ids.project)} value={project} required pattern="[A-Za-z0-9._\-]+" placeholder="e.g. billing" onInput={(e) => setProject(e.currentTarget.value.trim())} />
          </div>
          <div>
            <label for={ids.role}>Role (from the policy file)</label>
            <input id={ids.role} {...invalid('role')} {...missing.field(ids.role)} list={ids.roles} value={role} required onInput={(e) => setRole(e.currentTarget.value)} />
            <datalist id={ids.roles}>
              {roles.map((r) => (
                <option key={r} value={r} />
              ))}
            </datalist>
          </div>
          <div>
            <label for={ids.env}>Environment</label>
            <select id={ids.env} {...invalid('environment')} value={environment} onChange={(e) => setEnvironment(e.currentTarget.value as Environment)}>
              <option value="development">development</option>
              <option value="staging">staging</option>
              <option value="production">production</option>
            </select>
          </div>
          <div>
            <label for={ids.expiry}>Expires</label>
            <select id={ids.expiry} value={String(expiry)} onChange={(e) => setExpiry(Number(e.currentTarget.value))}>
              {EXPIRY_CHOICES.map((c, i) => (
                <option key={c.label} value={String(i)}>
                  {c.label}
                </option>
              ))}
            </select>
          </div>
        </div>
        <label for={ids.desc}>Description (who holds it and why)</label>
        <input id={ids.desc} {...invalid('description')} value={description} maxLength={1000} placeholder="e.g. Claude Desktop on Ana's laptop, docs repo" onInput={(e) => setDescription(e.currentTarget.value)} />

        <fieldset class="scopes-choice">
          <legend>Scopes (defaults for {TYPE_LABEL[type]} are ticked)</legend>
          {!catalogue && <p class="muted">Loading the scope catalogue…</p>}
          {allowed.map((s) => (
            <label key={s.scope} class="check" title={s.doc}>
              <input
                type="checkbox"
                checked={chosen.includes(s.scope)}
                onChange={(e) => {
                  const on = e.currentTarget.checked;
                  setScopes(on ? [...chosen, s.scope] : chosen.filter((x) => x !== s.scope));
                }}
              />{' '}
              <span class="mono">{s.scope}</span> <span class="muted">{s.doc}</span>
            </label>
          ))}
        </fieldset>

        {type === 'admin' && (
          <fieldset class="admin-confirm">
            <legend>Second confirmation</legend>
            <p>An admin token holds every scope: it can delete data, read secrets and manage users (auth:*).</p>
            <label class="check">
              <input id={ids.admin} type="checkbox" checked={confirmAdmin} {...missing.field(ids.admin)} onChange={(e) => setConfirmAdmin(e.currentTarget.checked)} />
              <span>
                I confirm this AI gets full access to project <strong>{project || '…'}</strong>.
              </span>
            </label>
            <label for={ids.confirmProject}>Type the project id again to confirm</label>
            <input id={ids.confirmProject} {...invalid('confirm_project_id')} {...missing.field(ids.confirmProject)} value={confirmProject} autoComplete="off" onInput={(e) => setConfirmProject(e.currentTarget.value.trim())} />
          </fieldset>
        )}

        <ErrorNote error={error ?? missing.note} id={ids.error} />
        <div class="actions">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class={writes ? 'danger' : 'primary'} disabled={busy}>
            Create
          </button>
        </div>
      </form>
    </Dialog>
  );
}

function GatewayKeys() {
  const list = useLoad(() => get<{ keys: GatewayKey[] }>('/v1/gateway-keys'), []);
  const [creating, setCreating] = useState(false);
  const [revoking, setRevoking] = useState<GatewayKey | null>(null);
  const [notice, setNotice] = useState('');
  return (
    <>
      <p class="lede">Gateway keys (ksgw_) let an MCP gateway ask for decisions. They are valid only on the gateway routes; each gateway should have its own.</p>
      <div class="toolbar">
        <span class="spacer" />
        <button type="button" class="primary" onClick={() => setCreating(true)}>
          Create gateway key
        </button>
      </div>
      <ErrorNote error={list.error} />
      <RevokeNotice text={notice} testId="gateway-key-notice" />
      <KeyTable keys={list.data?.keys} onRevoke={setRevoking} caption="Gateway keys" />
      {creating && (
        <CreateSimpleKey
          title="Create a gateway key"
          onClose={() => setCreating(false)}
          onCreated={list.reload}
          create={async (name, expiresIn) => (await post<{ key: string }>('/v1/gateway-keys', { name, ...(expiresIn ? { expires_in: expiresIn } : {}) })).key}
        />
      )}
      {revoking && (
        <ReasonDialog
          title="Revoke this gateway key?"
          confirmLabel="Revoke gateway key"
          danger
          reasonRequired={false}
          reasonLabel="Reason (optional; recorded in the audit trail)"
          onClose={() => setRevoking(null)}
          onConfirm={async (reason) => {
            await post(`/v1/gateway-keys/${revoking.id}/revoke`, reason.trim() ? { reason: reason.trim() } : {});
            setNotice(`Gateway key ${revoking.name} (${revoking.display_prefix}…) revoked: calls from that gateway are refused.`);
            list.reload();
          }}
        >
          <p>
            <strong>{revoking.name}</strong> <span class="mono">{revoking.display_prefix}…</span>: every call from that gateway is refused (401) from now on.
          </p>
        </ReasonDialog>
      )}
    </>
  );
}

function OperatorKeys() {
  const list = useLoad(() => get<{ keys: OperatorKey[] }>('/v1/operator-keys'), []);
  const [creating, setCreating] = useState(false);
  const [revoking, setRevoking] = useState<OperatorKey | null>(null);
  const [notice, setNotice] = useState('');
  if (list.error instanceof ApiError && list.error.status === 403) {
    return <Empty>Only owners manage operator keys. Your key can read tokens and gateway keys.</Empty>;
  }
  return (
    <>
      <p class="lede">Operator keys (ksop_) are for people: viewers read, operators act (revoke, resume, acknowledge, approve), owners also manage operator keys.</p>
      <div class="toolbar">
        <span class="spacer" />
        <button type="button" class="primary" onClick={() => setCreating(true)}>
          Create operator key
        </button>
      </div>
      <ErrorNote error={list.error} />
      <RevokeNotice text={notice} testId="operator-key-notice" />
      <KeyTable keys={list.data?.keys} onRevoke={setRevoking} withRole caption="Operator keys" />
      {creating && <CreateOperatorKey onClose={() => setCreating(false)} onCreated={list.reload} />}
      {revoking && (
        <ReasonDialog
          title="Revoke this operator key?"
          confirmLabel="Revoke operator key"
          danger
          reasonRequired={false}
          reasonLabel="Reason (optional; recorded in the audit trail)"
          onClose={() => setRevoking(null)}
          onConfirm={async (reason) => {
            await post(`/v1/operator-keys/${revoking.id}/revoke`, reason.trim() ? { reason: reason.trim() } : {});
            setNotice(`Operator key ${revoking.name} (${revoking.display_prefix}…) revoked: it can no longer use the admin API.`);
            list.reload();
          }}
        >
          <p>
            <strong>{revoking.name}</strong> ({revoking.role}) can no longer use the admin API. Revoking your own key signs you out.
          </p>
        </ReasonDialog>
      )}
    </>
  );
}

/** What the last revoke did, read out by screen readers (its row's button is gone). Always present, so the announcement is not lost. */
function RevokeNotice({ text, testId }: { text: string; testId: string }) {
  return (
    <div class="notice" aria-live="polite" data-testid={testId}>
      {text && <p>{text}</p>}
    </div>
  );
}

function KeyTable({ keys, onRevoke, withRole, caption }: { keys: (GatewayKey | OperatorKey)[] | undefined; onRevoke: (k: never) => void; withRole?: boolean; caption: string }) {
  if (!keys) return null;
  if (keys.length === 0) return <Empty>None yet.</Empty>;
  return (
    <div class="table-wrap">
      <table>
        <caption class="sr-only">{caption}</caption>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Key</th>
            {withRole && <th scope="col">Role</th>}
            {withRole && <th scope="col">Projects</th>}
            <th scope="col">Created</th>
            <th scope="col">Expires</th>
            <th scope="col">Last used</th>
            <th scope="col">Status</th>
            <th scope="col">
              <span class="sr-only">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {keys.map((k) => (
            <tr key={k.id}>
              <td>{k.name}</td>
              <td class="mono">{k.display_prefix}…</td>
              {withRole && <td>{(k as OperatorKey).role}</td>}
              {withRole && <td>{(k as OperatorKey).projects?.join(', ') ?? 'all'}</td>}
              <td>
                <Time value={k.created_at} />
              </td>
              <td>
                <Time value={k.expires_at} empty="never" />
              </td>
              <td>
                <Time value={k.last_used_at} empty="never" />
              </td>
              <td>
                <StatusPill value={status(k)} />
              </td>
              <td>
                {!k.revoked_at && (
                  <button type="button" class="danger small" onClick={() => onRevoke(k as never)} aria-label={`Revoke ${k.name}`}>
                    Revoke
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function CreateSimpleKey({
  title,
  create,
  onClose,
  onCreated,
  children,
}: { title: string; create: (name: string, expiresIn: number | undefined) => Promise<string>; onClose: () => void; onCreated: () => void; children?: ComponentChildren }) {
  const [name, setName] = useState('');
  const [expiry, setExpiry] = useState(0);
  const [raw, setRaw] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const ids = { name: useId(), expiry: useId() };
  if (raw) {
    return (
      <Dialog title="Key created" onClose={onClose}>
        <SecretOnce value={raw} label={name} />
        <div class="actions">
          <button type="button" class="primary" onClick={onClose}>
            Done
          </button>
        </div>
      </Dialog>
    );
  }
  return (
    <Dialog title={title} onClose={onClose}>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          try {
            setRaw(await create(name.trim(), EXPIRY_CHOICES[expiry]?.seconds));
            onCreated();
          } catch (err) {
            setError(err);
          } finally {
            setBusy(false);
          }
        }}
      >
        <label for={ids.name}>Name</label>
        <input id={ids.name} value={name} required maxLength={200} onInput={(e) => setName(e.currentTarget.value)} />
        <label for={ids.expiry}>Expires</label>
        <select id={ids.expiry} value={String(expiry)} onChange={(e) => setExpiry(Number(e.currentTarget.value))}>
          {EXPIRY_CHOICES.map((c, i) => (
            <option key={c.label} value={String(i)}>
              {c.label}
            </option>
          ))}
        </select>
        {children}
        <ErrorNote error={error} />
        <div class="actions">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={busy || !name.trim()}>
            Create
          </button>
        </div>
      </form>
    </Dialog>
  );
}

function CreateOperatorKey({ onClose, onCreated }: { onClose: () => void; onCreated: () => void }) {
  const [role, setRole] = useState<OperatorRole>('viewer');
  const [projects, setProjects] = useState('');
  const roleId = useId();
  const projectsId = useId();
  return (
    <CreateSimpleKey
      title="Create an operator key"
      onClose={onClose}
      onCreated={onCreated}
      create={async (name, expiresIn) => {
        const list = projects
          .split(',')
          .map((p) => p.trim())
          .filter(Boolean);
        const body = { name, role, ...(list.length ? { projects: list } : {}), ...(expiresIn ? { expires_in: expiresIn } : {}) };
        return (await post<{ key: string }>('/v1/operator-keys', body)).key;
      }}
    >
      <label for={roleId}>Role</label>
      <select id={roleId} value={role} onChange={(e) => setRole(e.currentTarget.value as OperatorRole)}>
        <option value="viewer">viewer</option>
        <option value="operator">operator</option>
        <option value="owner">owner</option>
      </select>
      <label for={projectsId}>Projects (comma-separated; empty = all)</label>
      <input id={projectsId} value={projects} onInput={(e) => setProjects(e.currentTarget.value)} />
    </CreateSimpleKey>
  );
}
