import { useState } from 'preact/hooks';
import { get, post } from '../api';
import { Empty, ErrorNote, Json, ReasonDialog, Time, useLoad } from '../components/ui';
import type { ToolDefinition } from '../types';

type Status = 'pending' | 'approved' | 'rejected' | 'superseded';

export function ToolsPage() {
  const [status, setStatus] = useState<Status>('pending');
  const [deciding, setDeciding] = useState<{ tool: ToolDefinition; verb: 'approve' | 'reject' } | null>(null);
  // For each pending definition, the one approved before it, so the change can be read side by side.
  const list = useLoad(async () => {
    const { tools } = await get<{ tools: ToolDefinition[] }>('/v1/tools', { status });
    if (status !== 'pending' || tools.length === 0) return tools.map((t) => ({ tool: t, previous: undefined }));
    const { tools: approved } = await get<{ tools: ToolDefinition[] }>('/v1/tools', { status: 'approved' });
    return tools.map((t) => ({ tool: t, previous: approved.find((a) => a.server === t.server && a.tool === t.tool) }));
  }, [status]);

  return (
    <section aria-labelledby="tools-title">
      <h1 id="tools-title">Tool definitions</h1>
      <p class="lede">
        Gateways report each upstream tool's definition and hash. A definition that changed after it was approved (a possible "rug pull") is pending: calls to it deny with TOOL_CHANGED until someone
        approves it here.
      </p>
      <div class="toolbar">
        <label>
          Status{' '}
          <select value={status} onChange={(e) => setStatus(e.currentTarget.value as Status)}>
            <option value="pending">pending</option>
            <option value="approved">approved</option>
            <option value="rejected">rejected</option>
            <option value="superseded">superseded</option>
          </select>
        </label>
      </div>
      <ErrorNote error={list.error} />
      {list.data && list.data.length === 0 && <Empty>{status === 'pending' ? 'No changed tool definitions wait for approval.' : 'None.'}</Empty>}
      {list.data?.map(({ tool, previous }) => (
        <article key={tool.id} class="tool-def" data-tool-id={tool.id}>
          <header class="session-head">
            <span class={`pill pill-${tool.status}`}>{tool.status}</span>
            <strong class="mono">
              {tool.server}/{tool.tool}
            </strong>
            <span class="mono muted" title={tool.hash}>
              {tool.hash.slice(0, 19)}…
            </span>
            <span>
              first seen <Time value={tool.first_seen_at} />, last reported <Time value={tool.last_reported_at} />
            </span>
            <span class="spacer" />
            {tool.status !== 'approved' && (
              <button type="button" class="primary small" onClick={() => setDeciding({ tool, verb: 'approve' })}>
                Approve
              </button>
            )}
            {tool.status === 'pending' && (
              <button type="button" class="danger small" onClick={() => setDeciding({ tool, verb: 'reject' })}>
                Reject
              </button>
            )}
          </header>
          {tool.decided_at && (
            <p class="hint">
              {tool.status} by {tool.decided_by} <Time value={tool.decided_at} />: {tool.decision_reason}
            </p>
          )}
          <div class="grid2">
            <div>
              <h3>{status === 'pending' ? 'New definition' : 'Definition'}</h3>
              <Json value={tool.definition} />
            </div>
            {status === 'pending' && (
              <div>
                <h3>Approved before</h3>
                {previous ? <Json value={previous.definition} /> : <p class="muted">No approved definition: a new tool.</p>}
              </div>
            )}
          </div>
        </article>
      ))}
      {deciding && (
        <ReasonDialog
          title={`${deciding.verb === 'approve' ? 'Approve' : 'Reject'} ${deciding.tool.server}/${deciding.tool.tool}?`}
          confirmLabel={deciding.verb === 'approve' ? 'Approve definition' : 'Reject definition'}
          danger={deciding.verb === 'reject'}
          onClose={() => setDeciding(null)}
          onConfirm={async (reason) => {
            await post(`/v1/tools/${deciding.tool.id}/${deciding.verb}`, { reason });
            list.reload();
          }}
        >
          <p>{deciding.verb === 'approve' ? 'Calls to this tool are allowed again (subject to every other check).' : 'Calls to this tool keep being denied.'}</p>
        </ReasonDialog>
      )}
    </section>
  );
}
