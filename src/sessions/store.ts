import type { Pool, PoolClient } from '../db/pool.js';
import { withQueryTimeout } from '../db/query-timeout.js';
import { conditions } from '../db/where.js';

// The only code that writes SQL for sessions and halts.

type Queryable = Pool | PoolClient;

export type SessionState = 'active' | 'halted' | 'closed';

/** Who closed a session the idle sweep closed (SESSION_IDLE_TIMEOUT_S): its `closed_by` and its session.closed row's actor. */
export const IDLE_SWEEP_ACTOR = 'idle-sweep';

export interface SessionRow {
  id: string;
  token_id: string;
  gateway_id: string | null;
  read_only: boolean;
  servers: string[] | null;
  purpose: string;
  state: SessionState;
  trigger: string | null;
  halted_at: Date | null;
  halt_summary: Record<string, unknown> | null;
  created_at: Date;
  closed_at: Date | null;
  /** `gateway:<id>`, `operator:<id>` or `idle-sweep` (migration 0013); null for sessions closed before it. */
  closed_by: string | null;
}

/** A session with what the admin API shows beside it: the token's project and any token halt in force. */
export interface SessionListRow extends SessionRow {
  project_id: string;
  token_halt_trigger: string | null;
  token_halted_at: Date | null;
}

/** An active session the idle sweep is about to close. */
export interface IdleSession {
  id: string;
  token_id: string;
  project_id: string;
}

export interface HaltRow {
  id: string;
  token_id: string;
  session_id: string | null;
  trigger: string;
  summary: Record<string, unknown>;
  halted_at: Date;
  resumed_at: Date | null;
  resumed_by: string | null;
  resume_reason: string | null;
}

const SESSION_COLUMNS = 's.id, s.token_id, s.gateway_id, s.read_only, s.servers, s.purpose, s.state, s.trigger, s.halted_at, s.halt_summary, s.created_at, s.closed_at, s.closed_by';
const LIST_FROM = `FROM sessions s
  JOIN agent_tokens t ON t.id = s.token_id
  LEFT JOIN token_halts th ON th.token_id = s.token_id AND th.resumed_at IS NULL`;
const LIST_COLUMNS = `${SESSION_COLUMNS}, t.project_id, th.trigger AS token_halt_trigger, th.halted_at AS token_halted_at`;

/**
 * How long after an agent token ended (revoked, or past its expiry) its halts and sessions are still copied
 * to Redis (the reconciler each minute, the reload after Redis lost its data). Revocation is final and an
 * expiry only ever moves earlier, so an ended token's calls are refused before any step reads Redis; the
 * grace outlasts every cache of the credential (TOKEN_CACHE_TTL_MS, at most 10 minutes) by far. Its halts
 * stay in force in Postgres; copying them grew with every token ever revoked while halted, and after a
 * flush their keys are not made again.
 */
export const ENDED_TOKEN_GRACE = '1 day';

/** SQL: the agent token `column` names has not ended more than ENDED_TOKEN_GRACE ago. */
const notEnded = (column: string) =>
  `NOT EXISTS (SELECT 1 FROM agent_tokens t WHERE t.id = ${column} AND (t.revoked_at < now() - interval '${ENDED_TOKEN_GRACE}' OR t.expires_at < now() - interval '${ENDED_TOKEN_GRACE}'))`;

/** Advisory lock space of the halt copies (kills use 7007). */
const HALT_LOCK_SPACE = 7008;

export const sessionStore = {
  async insertSession(
    db: Queryable,
    s: { id: string; token_id: string; gateway_id: string | null; read_only: boolean; servers: string[] | null; purpose: string; state: 'active' | 'halted'; trigger: string | null },
  ): Promise<SessionRow> {
    const { rows } = await db.query<SessionRow>(
      `INSERT INTO sessions AS s (id, token_id, gateway_id, read_only, servers, purpose, state, trigger, halted_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $7 = 'halted' THEN now() END)
       RETURNING ${SESSION_COLUMNS}`,
      [s.id, s.token_id, s.gateway_id, s.read_only, s.servers, s.purpose, s.state, s.trigger],
    );
    return rows[0]!;
  },

  async getSession(db: Queryable, id: string): Promise<SessionListRow | undefined> {
    const { rows } = await db.query<SessionListRow>(`SELECT ${LIST_COLUMNS} ${LIST_FROM} WHERE s.id = $1`, [id]);
    return rows[0];
  },

  /** The session if it belongs to this token, locked for the halt or resume that follows. */
  /**
   * Serialises copying halts from Postgres to Redis (shared: the reconciler and the epoch reload) with
   * lifting them (exclusive: resumes), so a copy read before a resume is never written after it.
   */
  async lockHaltCopies(db: PoolClient, mode: 'copy' | 'resume'): Promise<void> {
    await db.query(mode === 'copy' ? 'SELECT pg_advisory_xact_lock_shared($1, 1)' : 'SELECT pg_advisory_xact_lock($1, 1)', [HALT_LOCK_SPACE]);
  },

  async lockSession(db: PoolClient, id: string, tokenId?: string): Promise<SessionRow | undefined> {
    const args: unknown[] = [id];
    let where = 's.id = $1';
    if (tokenId) {
      args.push(tokenId);
      where += ' AND s.token_id = $2';
    }
    const { rows } = await db.query<SessionRow>(`SELECT ${SESSION_COLUMNS} FROM sessions s WHERE ${where} FOR UPDATE`, args);
    return rows[0];
  },

  async listSessions(
    db: Queryable,
    f: { state?: SessionState; tokenId?: string; projects: readonly string[] | null; limit: number; before?: string },
  ): Promise<SessionListRow[]> {
    const c = conditions();
    // "halted" is what an operator must act on: the session's own halt or its token's.
    if (f.state === 'halted') c.list.push("(s.state = 'halted' OR (th.id IS NOT NULL AND s.state = 'active'))");
    if (f.state === 'active') c.list.push("s.state = 'active' AND th.id IS NULL");
    if (f.state === 'closed') c.list.push("s.state = 'closed'");
    if (f.tokenId) c.add('s.token_id = ?', f.tokenId);
    if (f.projects) c.add('t.project_id = ANY(?)', [...f.projects]);
    if (f.before) c.add('s.id < ?', f.before);
    const { rows } = await db.query<SessionListRow>(`SELECT ${LIST_COLUMNS} ${LIST_FROM} ${c.where()} ORDER BY s.id DESC LIMIT ${c.arg(f.limit)}`, c.args);
    return rows;
  },

  async haltSession(db: PoolClient, h: { id: string; sessionId: string; tokenId: string; trigger: string; tokenHaltId: string | null; summary: object }): Promise<void> {
    await db.query(`UPDATE sessions SET state = 'halted', trigger = $2, halted_at = now(), halt_summary = $3 WHERE id = $1`, [h.sessionId, h.trigger, h.summary]);
    await db.query(
      `INSERT INTO session_halts (id, session_id, token_id, trigger, token_halt_id, summary) VALUES ($1, $2, $3, $4, $5, $6)
       ON CONFLICT (session_id) WHERE resumed_at IS NULL DO NOTHING`,
      [h.id, h.sessionId, h.tokenId, h.trigger, h.tokenHaltId, h.summary],
    );
  },

  /** Inserts the token halt unless one is in force; returns the halt in force and whether it is new. */
  async haltToken(db: PoolClient, h: { id: string; tokenId: string; trigger: string; sessionId: string | null; summary: object }): Promise<{ halt: HaltRow; created: boolean }> {
    const inserted = await db.query<HaltRow>(
      `INSERT INTO token_halts (id, token_id, trigger, session_id, summary) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (token_id) WHERE resumed_at IS NULL DO NOTHING RETURNING *`,
      [h.id, h.tokenId, h.trigger, h.sessionId, h.summary],
    );
    if (inserted.rows[0]) return { halt: inserted.rows[0], created: true };
    const existing = await this.activeTokenHalt(db, h.tokenId);
    return { halt: existing!, created: false };
  },

  async activeTokenHalt(db: Queryable, tokenId: string): Promise<HaltRow | undefined> {
    const { rows } = await db.query<HaltRow>('SELECT * FROM token_halts WHERE token_id = $1 AND resumed_at IS NULL', [tokenId]);
    return rows[0];
  },

  /** Whether the session's halt, and the token's, were resumed at or after `at` (a journaled halt recorded late must not undo that). */
  async resumedSince(db: Queryable, tokenId: string, sessionId: string | null, at: Date): Promise<{ session: boolean; token: boolean }> {
    const { rows } = await db.query<{ session: boolean; token: boolean }>(
      `SELECT EXISTS (SELECT 1 FROM session_halts WHERE session_id = $2 AND resumed_at >= $3) AS session,
              EXISTS (SELECT 1 FROM token_halts WHERE token_id = $1 AND resumed_at >= $3) AS token`,
      [tokenId, sessionId, at],
    );
    return rows[0] ?? { session: false, token: false };
  },

  async resumeSession(db: PoolClient, sessionId: string, by: string, reason: string): Promise<void> {
    await db.query(`UPDATE sessions SET state = 'active', trigger = NULL, halted_at = NULL WHERE id = $1 AND state = 'halted'`, [sessionId]);
    await db.query('UPDATE session_halts SET resumed_at = now(), resumed_by = $2, resume_reason = $3 WHERE session_id = $1 AND resumed_at IS NULL', [sessionId, by, reason]);
  },

  async resumeTokenHalt(db: PoolClient, tokenId: string, by: string, reason: string): Promise<HaltRow | undefined> {
    const { rows } = await db.query<HaltRow>(
      'UPDATE token_halts SET resumed_at = now(), resumed_by = $2, resume_reason = $3 WHERE token_id = $1 AND resumed_at IS NULL RETURNING *',
      [tokenId, by, reason],
    );
    return rows[0];
  },

  async haltedSessionIdsOfToken(db: Queryable, tokenId: string): Promise<string[]> {
    const { rows } = await db.query<{ id: string }>(`SELECT id FROM sessions WHERE token_id = $1 AND state = 'halted' FOR UPDATE`, [tokenId]);
    return rows.map((r) => r.id);
  },

  async sessionHalts(db: Queryable, sessionId: string): Promise<HaltRow[]> {
    const { rows } = await db.query<HaltRow>('SELECT * FROM session_halts WHERE session_id = $1 ORDER BY halted_at DESC LIMIT 20', [sessionId]);
    return rows;
  },

  async tokenProject(db: Queryable, tokenId: string): Promise<string | undefined> {
    const { rows } = await db.query<{ project_id: string }>('SELECT project_id FROM agent_tokens WHERE id = $1', [tokenId]);
    return rows[0]?.project_id;
  },

  /** The project of each agent token and session among `ids` (UUIDs) that exists: id → project. */
  async projectsOf(db: Queryable, ids: { tokens: readonly string[]; sessions: readonly string[] }): Promise<Map<string, string>> {
    const projects = new Map<string, string>();
    if (ids.tokens.length > 0) {
      const { rows } = await db.query<{ id: string; project_id: string }>('SELECT id::text, project_id FROM agent_tokens WHERE id = ANY($1::uuid[])', [ids.tokens]);
      for (const r of rows) projects.set(r.id, r.project_id);
    }
    if (ids.sessions.length > 0) {
      const { rows } = await db.query<{ id: string; project_id: string }>('SELECT s.id::text, t.project_id FROM sessions s JOIN agent_tokens t ON t.id = s.token_id WHERE s.id = ANY($1::uuid[])', [ids.sessions]);
      for (const r of rows) projects.set(r.id, r.project_id);
    }
    return projects;
  },

  /**
   * Sessions to mirror into Redis after it lost its data, in pages: active and halted ones of tokens that
   * have not ended (ENDED_TOKEN_GRACE).
   */
  async liveSessionsPage(db: Queryable, after: string | null, limit: number): Promise<SessionRow[]> {
    const { rows } = await db.query<SessionRow>(
      `SELECT ${SESSION_COLUMNS} FROM sessions s WHERE s.state IN ('active', 'halted') AND ($1::uuid IS NULL OR s.id > $1) AND ${notEnded('s.token_id')} ORDER BY s.id LIMIT $2`,
      [after, limit],
    );
    return rows;
  },

  /**
   * Halted sessions for the reconciler, a page at a time by id (`after`: the last id of the previous page).
   * With `liveTokens`, only those of tokens that have not ended (ENDED_TOKEN_GRACE).
   */
  async haltedSessionsPage(db: Queryable, after: string | null, limit: number, opts: { liveTokens?: boolean } = {}): Promise<SessionRow[]> {
    const { rows } = await db.query<SessionRow>(
      `SELECT ${SESSION_COLUMNS} FROM sessions s WHERE s.state = 'halted' AND ($1::uuid IS NULL OR s.id > $1)${opts.liveTokens ? ` AND ${notEnded('s.token_id')}` : ''} ORDER BY s.id LIMIT $2`,
      [after, limit],
    );
    return rows;
  },

  /** Token halts in force; with `liveTokens`, only those of tokens that have not ended (ENDED_TOKEN_GRACE). */
  async activeTokenHalts(db: Queryable, opts: { liveTokens?: boolean } = {}): Promise<Array<{ token_id: string; trigger: string }>> {
    const { rows } = await db.query<{ token_id: string; trigger: string }>(
      `SELECT h.token_id, h.trigger FROM token_halts h WHERE h.resumed_at IS NULL${opts.liveTokens ? ` AND ${notEnded('h.token_id')}` : ''}`,
    );
    return rows;
  },

  /**
   * Active sessions old enough to have idled out, in pages (the sweeper asks Redis which are gone). Read
   * from the pool outside a transaction, so it takes its own client-side timeout (`timeoutMs`).
   */
  async idleCandidates(db: Queryable, olderThanMs: number, after: string | null, limit: number, timeoutMs: number): Promise<string[]> {
    const { rows } = await db.query<{ id: string }>(
      withQueryTimeout(
        {
          text: `SELECT id FROM sessions WHERE state = 'active' AND created_at < now() - make_interval(secs => $1::double precision / 1000)
         AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3`,
          values: [olderThanMs, after, limit],
        },
        timeoutMs,
      ),
    );
    return rows.map((r) => r.id);
  },

  /**
   * Locks the sessions among `ids` that are still active, with their token's project, for the idle sweep:
   * the sweep writes their `session.closed` rows, then closes only those whose row was written. Another
   * replica sweeping the same ids waits on the row locks and then finds them closed, so each session is
   * closed, and audited, by one replica only.
   */
  async lockActiveSessions(db: PoolClient, ids: string[]): Promise<IdleSession[]> {
    if (ids.length === 0) return [];
    const { rows } = await db.query<IdleSession>(
      `SELECT s.id, s.token_id, t.project_id FROM sessions s JOIN agent_tokens t ON t.id = s.token_id
       WHERE s.id = ANY($1::uuid[]) AND s.state = 'active' ORDER BY s.id FOR UPDATE OF s`,
      [ids],
    );
    return rows;
  },

  async closeSessions(db: Queryable, ids: string[], closedBy: string): Promise<number> {
    if (ids.length === 0) return 0;
    const { rowCount } = await db.query(
      `UPDATE sessions SET state = 'closed', closed_at = now(), closed_by = $2 WHERE id = ANY($1::uuid[]) AND state = 'active'`,
      [ids, closedBy],
    );
    return rowCount ?? 0;
  },

  /**
   * Retention (src/retention): removes up to `limit` session halts resumed before `cutoff`, then token
   * halts resumed before it that no remaining session halt names. A halt in force (not resumed) is never
   * removed, however old; the audit trail keeps the halt and the resume (the halting call's row with its
   * trigger, `session.resumed`, `agent_token.resumed`) for AUDIT_RETENTION_DAYS. The summaries hold the last
   * calls' arguments and errors, so they are not kept forever.
   */
  async deleteResumedHaltsBefore(db: Queryable, cutoff: Date, limit: number): Promise<number> {
    const sessionHalts = await db.query(
      'DELETE FROM session_halts WHERE id IN (SELECT id FROM session_halts WHERE resumed_at < $1 ORDER BY resumed_at LIMIT $2) AND resumed_at < $1',
      [cutoff, limit],
    );
    const removed = sessionHalts.rowCount ?? 0;
    // The session row's copy of its last halt's summary goes with its halt records (a resume keeps it).
    await db.query(
      `UPDATE sessions s SET halt_summary = NULL WHERE s.id IN (
         SELECT c.id FROM sessions c
         WHERE c.halt_summary IS NOT NULL AND c.state <> 'halted'
           AND NOT EXISTS (SELECT 1 FROM session_halts h WHERE h.session_id = c.id)
           AND NOT EXISTS (SELECT 1 FROM token_halts th WHERE th.session_id = c.id)
         LIMIT $1)
       AND s.state <> 'halted'`,
      [limit],
    );
    if (removed >= limit) return removed;
    const tokenHalts = await db.query(
      `DELETE FROM token_halts WHERE id IN (
         SELECT th.id FROM token_halts th
         WHERE th.resumed_at < $1 AND NOT EXISTS (SELECT 1 FROM session_halts h WHERE h.token_halt_id = th.id)
         ORDER BY th.resumed_at LIMIT $2)
       AND resumed_at < $1`,
      [cutoff, limit - removed],
    );
    return removed + (tokenHalts.rowCount ?? 0);
  },

  /**
   * Retention (src/retention): removes up to `limit` sessions closed before `cutoff` that nothing refers
   * to or keeps in force. Closed is final (nothing reopens a session, and a halt of a closed session
   * records no session), and Redis dropped the session when it idled out. Kept: any session a halt row
   * still names (session_halts, or token_halts naming it: deleteResumedHaltsBefore runs first and keeps
   * halts in force and the ones resumed after the cutoff), and any named by a kill, grant or approval
   * still in force.
   */
  async deleteClosedBefore(db: Queryable, cutoff: Date, limit: number): Promise<number> {
    const { rowCount } = await db.query(
      `DELETE FROM sessions s WHERE s.id IN (
         SELECT c.id FROM sessions c
         WHERE c.state = 'closed' AND c.id < $3 AND COALESCE(c.closed_at, c.created_at) < $1
           AND NOT EXISTS (SELECT 1 FROM session_halts h WHERE h.session_id = c.id)
           AND NOT EXISTS (SELECT 1 FROM token_halts th WHERE th.session_id = c.id)
           AND NOT EXISTS (SELECT 1 FROM kills k WHERE k.target = 'session' AND lower(k.session_id) = c.id::text AND k.lifted_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now()))
           AND NOT EXISTS (SELECT 1 FROM grants g WHERE lower(g.session_id) = c.id::text AND g.revoked_at IS NULL AND g.expires_at > now())
           AND NOT EXISTS (SELECT 1 FROM approvals a WHERE lower(a.session_id) = c.id::text AND a.state IN ('pending', 'approved') AND a.expires_at > now())
         ORDER BY c.id LIMIT $2)
       AND s.state = 'closed' AND COALESCE(s.closed_at, s.created_at) < $1`,
      [cutoff, limit, uuidV7Floor(cutoff)],
    );
    return rowCount ?? 0;
  },
};

/**
 * The smallest UUIDv7 of a millisecond. Session ids are UUIDv7 issued at opening, so a session closed
 * before `t` has a smaller id: bounding the scan by id lets the state index stop there instead of reading
 * every younger closed session on each run.
 */
function uuidV7Floor(t: Date): string {
  const hex = Math.max(0, t.getTime()).toString(16).padStart(12, '0');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-0000-0000-000000000000`;
}
