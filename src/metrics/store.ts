import type { Pool } from '../db/pool.js';
import { REQUEST_QUERY_TIMEOUT_MS, withQueryTimeout } from '../db/query-timeout.js';

/** Installation-wide counts /metrics reports (the same on every replica). Read at scrape time only. */
export interface StateCounts {
  /** Halted sessions of tokens that are neither revoked nor expired. */
  haltedSessions: number;
  /** Halted tokens that are neither revoked nor expired. */
  haltedTokens: number;
  /** Changed tool definitions waiting for an operator (DESIGN.md §3, "rug pull"). */
  pendingToolDefinitions: number;
  /** Tool calls waiting for a human to approve their exact arguments (src/approvals), not yet expired. */
  pendingCalls: number;
  /** Break-glass kills in force (POST /v1/kills), not lifted and not expired. */
  activeKills: number;
}

/** The agent token `t` can still call: neither revoked nor expired. */
const LIVE_TOKEN = 't.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())';

export const metricsStore = {
  async stateCounts(db: Pool): Promise<StateCounts> {
    const { rows } = await db.query<{ halted_sessions: number; halted_tokens: number; pending_tool_definitions: number; pending_calls: number; active_kills: number }>(
      withQueryTimeout(
        {
          // Halts of revoked or expired tokens need nobody: the token can never call again (revoking is how an
          // incident is often ended), and the alert on these gauges would otherwise fire for ever after it.
          text: `SELECT (SELECT count(*) FROM sessions s JOIN agent_tokens t ON t.id = s.token_id WHERE s.state = 'halted' AND ${LIVE_TOKEN}) AS halted_sessions,
              (SELECT count(*) FROM token_halts h JOIN agent_tokens t ON t.id = h.token_id WHERE h.resumed_at IS NULL AND ${LIVE_TOKEN}) AS halted_tokens,
              (SELECT count(*) FROM tool_definitions WHERE status = 'pending') AS pending_tool_definitions,
              (SELECT count(*) FROM approvals WHERE state = 'pending' AND expires_at > now()) AS pending_calls,
              (SELECT count(*) FROM kills WHERE lifted_at IS NULL AND (expires_at IS NULL OR expires_at > now())) AS active_kills`,
        },
        // A Postgres that hangs holds the connection this long, not the pool's 30 s (scrapes do not wait for it).
        REQUEST_QUERY_TIMEOUT_MS,
      ),
    );
    const r = rows[0];
    return {
      haltedSessions: r?.halted_sessions ?? 0,
      haltedTokens: r?.halted_tokens ?? 0,
      pendingToolDefinitions: r?.pending_tool_definitions ?? 0,
      pendingCalls: r?.pending_calls ?? 0,
      activeKills: r?.active_kills ?? 0,
    };
  },
};
