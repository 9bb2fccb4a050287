import { useEffect, useState } from 'preact/hooks';
import { get, post, readEventStream } from '../api';
import { Empty, ErrorNote, Json, ReasonDialog, shortId, Time, useLoad } from '../components/ui';
import type { Approval } from '../types';

type State = 'pending' | 'approved' | 'rejected' | 'expired' | 'used' | 'superseded' | '';
type Kind = 'call' | 'tool_definition' | '';

// Alerts that mean the queue changed: reload when one arrives on the stream.
const QUEUE_ALERTS = ['APPROVAL_REQUESTED', 'APPROVAL_DECIDED', 'TOOL_CHANGED'];

/** "Call filesystem/move_file" or "Tool definition github/create_issue": what a button or notice is about. */
function approvalName(a: Approval): string {
  return `${a.kind === 'call' ? 'call' : 'tool definition'} ${a.server}/${a.tool}`;
}

export function ApprovalsPage() {
  const [state, setState] = useState<State>('pending');
  const [kind, setKind] = useState<Kind>('');
  const [deciding, setDeciding] = useState<{ item: Approval; verb: 'approve' | 'reject' } | null>(null);
  const [notice, setNotice] = useState('');
  const list = useLoad(() => get<{ approvals: Approval[] }>('/v1/approvals', { state: state || undefined, kind: kind || undefined, limit: 200 }), [state, kind]);

  useEffect(() => {
    const abort = new AbortController();
    void readEventStream(
      `/v1/alerts/stream?${QUEUE_ALERTS.map((k) => `kind=${k}`).join('&')}`,
      (e) => {
        if (e.event === 'alert') list.reload();
      },
      () => {},
      abort.signal,
    );
    return () => abort.abort();
  }, [list.reload]);

  return (
    <section aria-labelledby="approvals-title">
      <h1 id="approvals-title">Approvals</h1>
      <p class="lede">
        Calls the policy says a person must approve (the AI prepares, a person applies), and changed tool definitions. An approval allows the <em>identical</em> call — same token, session, tool
        and arguments — once, within its window; a rejection refuses identical calls with your reason.
      </p>
      <div class="toolbar">
        <label>
          State{' '}
          <select value={state} onChange={(e) => setState(e.currentTarget.value as State)}>
            <option value="pending">pending</option>
            <option value="approved">approved</option>
            <option value="used">used</option>
            <option value="rejected">rejected</option>
            <option value="expired">expired</option>
            <option value="superseded">superseded</option>
            <option value="">all</option>
          </select>
        </label>
        <label>
          Kind{' '}
          <select value={kind} onChange={(e) => setKind(e.currentTarget.value as Kind)}>
            <option value="">calls and tool definitions</option>
            <option value="call">tool calls</option>
            <option value="tool_definition">tool definitions</option>
          </select>
        </label>
      </div>
      <ErrorNote error={list.error} />
      {/* What the last decision did, read out by screen readers (its card leaves the pending list). */}
      <div class="notice" aria-live="polite" data-testid="approval-notice">
        {notice && <p>{notice}</p>}
      </div>
      {list.data && list.data.approvals.length === 0 && <Empty>{state === 'pending' ? 'Nothing waits for a decision.' : 'None.'}</Empty>}
      {list.data?.approvals.map((a) => (
        <article key={a.id} class="tool-def" data-approval-id={a.id} aria-label={`${a.kind === 'call' ? 'Call' : 'Tool definition'} ${a.server}/${a.tool}`}>
          <header class="session-head">
            <span class={`pill pill-${a.state}`}>{a.state}</span>
            <span class="kind">{a.kind === 'call' ? 'TOOL CALL' : 'TOOL DEFINITION'}</span>
            <strong class="mono">
              {a.server}/{a.tool}
            </strong>
            {a.capability && <span class="muted">{a.capability}</span>}
            <span>
              asked <Time value={a.created_at} />
            </span>
            {a.state === 'pending' && a.expires_at && (
              <span>
                expires <Time value={a.expires_at} />
              </span>
            )}
            <span class="spacer" />
            {a.state === 'pending' && (
              <>
                <button type="button" class="primary small" onClick={() => setDeciding({ item: a, verb: 'approve' })} aria-label={`Approve ${approvalName(a)}`}>
                  Approve
                </button>
                <button type="button" class="danger small" onClick={() => setDeciding({ item: a, verb: 'reject' })} aria-label={`Reject ${approvalName(a)}`}>
                  Reject
                </button>
              </>
            )}
          </header>
          <dl class="facts">
            {a.kind === 'call' && (
              <>
                <dt>Token · role</dt>
                <dd>
                  <span class="mono" title={a.token_id ?? ''}>
                    {shortId(a.token_id)}
                  </span>{' '}
                  · {a.role ?? '—'}
                </dd>
                <dt>Project · environment</dt>
                <dd>
                  {a.project_id ?? '—'} · {a.environment ?? '—'}
                </dd>
                <dt>Session</dt>
                <dd class="mono" title={a.session_id ?? ''}>
                  {shortId(a.session_id)}
                </dd>
              </>
            )}
            {a.rule && (
              <>
                <dt>Policy rule</dt>
                <dd class="mono">{a.rule}</dd>
              </>
            )}
            {a.separate_approver && (
              <>
                <dt>Approver</dt>
                <dd>must not be the operator who created the token</dd>
              </>
            )}
            {a.decided_at && (
              <>
                <dt>Decided</dt>
                <dd>
                  {a.state === 'rejected' ? 'rejected' : 'approved'} by {a.decided_by_name ?? a.decided_by} <Time value={a.decided_at} />: {a.reason}
                </dd>
              </>
            )}
            {a.used_at && (
              <>
                <dt>Used</dt>
                <dd>
                  <Time value={a.used_at} /> by decision <span class="mono">{shortId(a.used_decision_id)}</span>
                </dd>
              </>
            )}
          </dl>
          {a.kind === 'call' ? (
            <>
              <h2 class="sub">Arguments (exactly what the approval covers)</h2>
              <Json value={a.arguments} />
            </>
          ) : (
            <>
              <h2 class="sub">
                New definition (compare with the approved one under <a href="#/tools">Tool definitions</a>)
              </h2>
              <Json value={a.definition} />
            </>
          )}
        </article>
      ))}
      {deciding && (
        <ReasonDialog
          title={`${deciding.verb === 'approve' ? 'Approve' : 'Reject'} ${deciding.item.server}/${deciding.item.tool}?`}
          confirmLabel={deciding.verb === 'approve' ? 'Approve' : 'Reject'}
          danger={deciding.verb === 'reject'}
          minLength={3}
          reasonLabel={deciding.verb === 'approve' ? 'Why is it safe? (audited)' : 'Why not? (audited, and shown to the agent)'}
          onClose={() => setDeciding(null)}
          onConfirm={async (reason) => {
            await post(`/v1/approvals/${deciding.item.id}/${deciding.verb}`, { reason });
            const name = approvalName(deciding.item);
            setNotice(`${name.charAt(0).toUpperCase()}${name.slice(1)} ${deciding.verb === 'approve' ? 'approved' : 'rejected'}.`);
            list.reload();
          }}
        >
          <p>
            {deciding.verb === 'approve'
              ? deciding.item.kind === 'call'
                ? 'The identical call may then run once.'
                : 'Calls to this tool are allowed again with the new definition.'
              : deciding.item.kind === 'call'
                ? 'Identical calls are refused with your reason.'
                : 'Calls to this tool keep being denied.'}
          </p>
        </ReasonDialog>
      )}
    </section>
  );
}
