import { useState } from 'preact/hooks';
import { get, post } from '../api';
import { Empty, ErrorNote, Json, ReasonDialog, Time, useLoad } from '../components/ui';
import type { ToolDefinition } from '../types';

type Status = 'pending' | 'approved' | 'rejected' | 'superseded';
type Page = { tools: ToolDefinition[]; next_cursor: string | null };

/** GET /v1/tools answers a page at a time (newest first); "Show more" loads one more page. */
const PAGE = 200;

export function ToolsPage() {
  const [status, setStatus] = useState<Status>('pending');
  const [pages, setPages] = useState(1);
  const [deciding, setDeciding] = useState<{ tool: ToolDefinition; verb: 'approve' | 'reject' } | null>(null);
  const [notice, setNotice] = useState('');
  // For each pending definition, the one approved before it, so the change can be read side by side.
  const list = useLoad(async () => {
    const tools: ToolDefinition[] = [];
    let cursor: string | null = null;
    for (let i = 0; i < pages; i++) {
      const page: Page = await get<Page>('/v1/tools', { status, limit: PAGE, cursor: cursor ?? undefined });
      tools.push(...page.tools);
      cursor = page.next_cursor;
      if (!cursor) break;
    }
    if (status !== 'pending' || tools.length === 0) return { rows: tools.map((t) => ({ tool: t, previous: undefined })), more: cursor !== null };
    // A server has at most 500 tools pinned (one approved definition each): one page per server holds them all.
    const approved = new Map<string, ToolDefinition[]>();
    for (const server of new Set(tools.map((t) => t.server))) approved.set(server, (await get<Page>('/v1/tools', { status: 'approved', server, limit: 500 })).tools);
    return { rows: tools.map((t) => ({ tool: t, previous: approved.get(t.server)?.find((a) => a.tool === t.tool) })), more: cursor !== null };
  }, [status, pages]);

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
          <select
            value={status}
            onChange={(e) => {
              setStatus(e.currentTarget.value as Status);
              setPages(1);
            }}
          >
            <option value="pending">pending</option>
            <option value="approved">approved</option>
            <option value="rejected">rejected</option>
            <option value="superseded">superseded</option>
          </select>
        </label>
      </div>
      <ErrorNote error={list.error} />
      {/* What the last decision did, read out by screen readers (the definition leaves this list). */}
      <div class="notice" aria-live="polite" data-testid="tool-notice">
        {notice && <p>{notice}</p>}
      </div>
      {list.data && list.data.rows.length === 0 && <Empty>{status === 'pending' ? 'No changed tool definitions wait for approval.' : 'None.'}</Empty>}
      {list.data?.rows.map(({ tool, previous }) => (
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
              <button type="button" class="primary small" onClick={() => setDeciding({ tool, verb: 'approve' })} aria-label={`Approve definition of ${tool.server}/${tool.tool}`}>
                Approve
              </button>
            )}
            {(tool.status === 'pending' || tool.status === 'approved') && (
              <button type="button" class="danger small" onClick={() => setDeciding({ tool, verb: 'reject' })} aria-label={`Reject definition of ${tool.server}/${tool.tool}`}>
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
              <h2 class="sub">{status === 'pending' ? 'New definition' : 'Definition'}</h2>
              <Json value={tool.definition} />
            </div>
            {status === 'pending' && (
              <div>
                <h2 class="sub">Approved before</h2>
                {previous ? <Json value={previous.definition} /> : <p class="muted">No approved definition: a new tool.</p>}
              </div>
            )}
          </div>
        </article>
      ))}
      {list.data?.more && (
        <button type="button" class="small" onClick={() => setPages(pages + 1)}>
          Show more
        </button>
      )}
      {deciding && (
        <ReasonDialog
          title={`${deciding.verb === 'approve' ? 'Approve' : 'Reject'} ${deciding.tool.server}/${deciding.tool.tool}?`}
          confirmLabel={deciding.verb === 'approve' ? 'Approve definition' : 'Reject definition'}
          danger={deciding.verb === 'reject'}
          onClose={() => setDeciding(null)}
          onConfirm={async (reason) => {
            await post(`/v1/tools/${deciding.tool.id}/${deciding.verb}`, { reason });
            setNotice(`Definition of ${deciding.tool.server}/${deciding.tool.tool} ${deciding.verb === 'approve' ? 'approved' : 'rejected'}.`);
            list.reload();
          }}
        >
          <p>{deciding.verb === 'approve' ? 'Calls to this tool are allowed again (subject to every other check).' : 'Calls to this tool keep being denied.'}</p>
        </ReasonDialog>
      )}
    </section>
  );
}
