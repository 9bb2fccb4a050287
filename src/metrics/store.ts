import type { Pool } from '../db/pool.js';

/** Installation-wide counts /metrics reports (the same on every replica). Read at scrape time only. */
export interface StateCounts {
  haltedSessions: number;
  haltedTokens: number;
  /** Changed tool definitions waiting for an operator (DESIGN.md §3, "rug pull"). */
  pendingToolDefinitions: number;
  /** Tool calls waiting for a human to approve their exact arguments (src/approvals), not yet expired. */
  pendingCalls: number;
  /** Break-glass kills in force (POST /v1/kills), not lifted and not expired. */
  activeKills: number;
}

export const metricsStore = {
  async stateCounts(db: Pool): Promise<StateCounts> {
    const { rows } = await db.query<{ halted_sessions: number; halted_tokens: number; pending_tool_definitions: number; pending_calls: number; active_kills: number }>(
      `SELECT (SELECT count(*) FROM sessions WHERE state = 'halted') AS halted_sessions,
              (SELECT count(*) FROM token_halts WHERE resumed_at IS NULL) AS halted_tokens,
              (SELECT count(*) FROM tool_definitions WHERE status = 'pending') AS pending_tool_definitions,
              (SELECT count(*) FROM approvals WHERE state = 'pending' AND expires_at > now()) AS pending_calls,
              (SELECT count(*) FROM kills WHERE lifted_at IS NULL AND (expires_at IS NULL OR expires_at > now())) AS active_kills`,
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
