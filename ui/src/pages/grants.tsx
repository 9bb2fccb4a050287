import { useEffect, useId, useRef, useState } from 'preact/hooks';
import { api, get, post } from '../api';
import { Dialog, Empty, ErrorNote, invalidMarker, oneLine, ReasonDialog, shortId, Time, useLoad, useTokenDescriptions } from '../components/ui';
import type { Grant } from '../types';

export function GrantsPage() {
  const [activeOnly, setActiveOnly] = useState(true);
  const [creating, setCreating] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [revoking, setRevoking] = useState<Grant | null>(null);
  const [notice, setNotice] = useState('');
  const noticeRef = useRef<HTMLDivElement>(null);
  const descriptions = useTokenDescriptions();
  const list = useLoad(() => get<{ grants: Grant[] }>('/v1/grants', { active: activeOnly ? true : undefined }), [activeOnly]);
  // After a revoke the focus goes to the notice, once the dialog has closed (and handed the focus back to
  // the row's Revoke button), and again once the reload that follows has landed: it removes the row, and
  // the dialog's focus watch may then have moved the focus to the main area (seen in CI, where the reload
  // landed between the two). The revoke's time: done once a reload newer than it has landed.
  const focusNoticeSince = useRef<number | null>(null);
  useEffect(() => {
    const since = focusNoticeSince.current;
    if (revoking || since === null) return;
    noticeRef.current?.focus();
    if ((list.updatedAt?.getTime() ?? 0) >= since) focusNoticeSince.current = null;
  }, [revoking, list.updatedAt]);
  return (
    <section aria-labelledby="grants-title">
      <h1 id="grants-title">Grants</h1>
      <p class="lede">
        A grant is a human's permission, bounded in time: production access for an agent token (without it, production calls answer HUMAN_AUTHORIZATION_REQUIRED), or permission for large results.
      </p>
      <div class="toolbar">
        <label class="check">
          <input type="checkbox" checked={activeOnly} onChange={(e) => setActiveOnly(e.currentTarget.checked)} /> Active only
        </label>
        <span class="spacer" />
        <button type="button" class="primary" onClick={() => setCreating(true)}>
          Grant access
        </button>
      </div>
      <ErrorNote error={list.error ?? error} />
      {/* What the last revoke did, read out by screen readers; the focus goes here (the row's button is gone). */}
      <div class="notice" aria-live="polite" data-testid="grant-notice" tabIndex={-1} ref={noticeRef}>
        {notice && <p>{notice}</p>}
      </div>
      {list.data && list.data.grants.length === 0 && <Empty>No grants.</Empty>}
      {list.data && list.data.grants.length > 0 && (
        <div class="table-wrap">
          <table>
            <caption class="sr-only">{activeOnly ? 'Active grants' : 'Grants'}</caption>
            <thead>
              <tr>
                <th scope="col">Kind</th>
                <th scope="col">Token</th>
                <th scope="col">Session</th>
                <th scope="col">Reason</th>
                <th scope="col">By</th>
                <th scope="col">Expires</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.data.grants.map((g) => (
                <tr key={g.id}>
                  <td>{grantKind(g)}</td>
                  <td class="mono" title={g.token_id}>
                    {shortId(g.token_id)}
                  </td>
                  <td class="mono">{g.session_id ? shortId(g.session_id) : 'any'}</td>
                  <td>{g.reason}</td>
                  <td>{g.created_by}</td>
                  <td>{g.revoked_at ? <span class="pill pill-revoked">revoked</span> : <Time value={g.expires_at} />}</td>
                  <td>
                    {!g.revoked_at && new Date(g.expires_at).getTime() > Date.now() && (
                      <button type="button" class="danger small" onClick={() => setRevoking(g)} aria-label={`Revoke ${grantKind(g)} grant of token ${shortId(g.token_id)}${descriptions.get(g.token_id) ? ` “${descriptions.get(g.token_id)}”` : ''}`}>
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
      {revoking && (
        <ReasonDialog
          title="Revoke this grant?"
          confirmLabel="Revoke grant"
          danger
          reasonRequired={false}
          reasonLabel="Reason (optional; recorded in the audit trail)"
          onClose={() => setRevoking(null)}
          onConfirm={async (reason) => {
            const g = revoking;
            setError(null);
            try {
              await api('DELETE', `/v1/grants/${g.id}`, reason ? { reason } : undefined);
              setNotice(`The ${grantKind(g)} grant of token ${shortId(g.token_id)} is revoked.`);
              focusNoticeSince.current = Date.now();
            } catch (err) {
              // A 503 says the grant was revoked but its audit row is missing: reload either way, so the list
              // does not show a revoked grant as active.
              setError(err);
            } finally {
              list.reload();
            }
          }}
        >
          <p>
            {grantKind(revoking)} for token <span class="mono">{revoking.token_id}</span>
            {descriptions.get(revoking.token_id) && <> “{descriptions.get(revoking.token_id)}”</>}
            {revoking.session_id ? (
              <>
                {' '}
                in session <span class="mono">{revoking.session_id}</span>
              </>
            ) : (
              ' in any session'
            )}
            : it stops at once; calls that need it are refused again.
          </p>
        </ReasonDialog>
      )}
      {creating && <CreateGrant onClose={() => setCreating(false)} onCreated={list.reload} />}
    </section>
  );
}

function grantKind(g: Grant): string {
  return g.kind === 'production' ? 'production access' : 'large results';
}

function CreateGrant({ onClose, onCreated }: { onClose: () => void; onCreated: () => void }) {
  const [kind, setKind] = useState<'production' | 'large_results'>('production');
  const [token, setToken] = useState('');
  const [session, setSession] = useState('');
  const [reason, setReason] = useState('');
  const [minutes, setMinutes] = useState(60);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const p = useId();
  const invalid = invalidMarker(error, `${p}-error`);
  return (
    <Dialog title="Grant access" onClose={onClose}>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          setError(null);
          try {
            await post('/v1/grants', { kind, token_id: token.trim(), ...(session.trim() ? { session_id: session.trim() } : {}), reason: reason.trim(), expires_in: minutes * 60 });
            onCreated();
            onClose();
          } catch (err) {
            setError(err);
            setBusy(false);
          }
        }}
      >
        <label for={`${p}-kind`}>Kind</label>
        <select id={`${p}-kind`} {...invalid('kind')} value={kind} onChange={(e) => setKind(e.currentTarget.value as 'production' | 'large_results')}>
          <option value="production">production access</option>
          <option value="large_results">large results</option>
        </select>
        <label for={`${p}-token`}>Agent token id</label>
        <input id={`${p}-token`} {...invalid('token_id')} class="mono" required value={token} onInput={(e) => setToken(e.currentTarget.value)} />
        <label for={`${p}-session`}>Session id (optional: limit to one session)</label>
        <input id={`${p}-session`} {...invalid('session_id')} class="mono" value={session} onInput={(e) => setSession(e.currentTarget.value)} />
        <label for={`${p}-minutes`}>For how many minutes</label>
        <input id={`${p}-minutes`} {...invalid('expires_in')} type="number" min={1} max={10080} value={minutes} onInput={(e) => setMinutes(Number(e.currentTarget.value))} />
        <label for={`${p}-reason`}>Reason (audited)</label>
        <textarea id={`${p}-reason`} {...invalid('reason')} rows={2} required minLength={3} value={reason} onInput={(e) => setReason(oneLine(e.currentTarget.value))} />
        <ErrorNote error={error} id={`${p}-error`} />
        <div class="actions">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={busy || !token.trim() || reason.trim().length < 3}>
            Grant
          </button>
        </div>
      </form>
    </Dialog>
  );
}
