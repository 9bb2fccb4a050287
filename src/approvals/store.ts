import type { Pool, PoolClient } from '../db/pool.js';
import { conditions } from '../db/where.js';

export type ApprovalState = 'pending' | 'approved' | 'rejected' | 'expired' | 'used';
/** A single tool call, or a production grant for a token and session (migrations/0008). */
export type ApprovalKind = 'call' | 'production_grant';

export interface ApprovalRow {
  id: string;
  kind: ApprovalKind;
  /** production_grant, once approved: the grant it created. */
  grant_id: string | null;
  call_key: string;
  token_id: string;
  project_id: string;
  environment: string;
  role: string;
  session_id: string;
  gateway_id: string | null;
  server: string;
  tool: string;
  capability: string;
  arguments: Record<string, unknown>;
  arguments_hash: string;
  rule: string;
  separate_approver: boolean;
  ttl_seconds: number;
  /** As read: a pending or approved row past its expiry reads as expired, whether or not the sweeper ran. */
  state: ApprovalState;
  requested_decision_id: string;
  created_at: Date;
  expires_at: Date;
  decided_at: Date | null;
  decided_by: string | null;
  decided_by_name: string | null;
  reason: string | null;
  used_at: Date | null;
  used_decision_id: string | null;
}

export type NewApproval = Omit<ApprovalRow, 'grant_id' | 'state' | 'created_at' | 'decided_at' | 'decided_by' | 'decided_by_name' | 'reason' | 'used_at' | 'used_decision_id'>;

const EFFECTIVE_STATE = "CASE WHEN state IN ('pending', 'approved') AND expires_at <= now() THEN 'expired' ELSE state END";
const COLUMNS = `id, kind, grant_id, call_key, token_id, project_id, environment, role, session_id, gateway_id, server, tool, capability, arguments, arguments_hash, rule,
  separate_approver, ttl_seconds, ${EFFECTIVE_STATE} AS state, requested_decision_id, created_at, expires_at, decided_at, decided_by, decided_by_name, reason, used_at, used_decision_id`;

type Db = Pool | PoolClient;

export interface ApprovalFilter {
  kind?: ApprovalKind | undefined;
  state?: ApprovalState | undefined;
  token?: string | undefined;
  server?: string | undefined;
  /** Only these projects (a project-limited operator); undefined: all. */
  projects?: readonly string[] | undefined;
  limit: number;
}

export const approvalStore = {
  async insert(db: Db, a: NewApproval): Promise<ApprovalRow> {
    const { rows } = await db.query<ApprovalRow>(
      `INSERT INTO approvals (kind, id, call_key, token_id, project_id, environment, role, session_id, gateway_id, server, tool, capability, arguments, arguments_hash,
         rule, separate_approver, ttl_seconds, state, requested_decision_id, expires_at)
       VALUES ($19,$1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,'pending',$17,$18) RETURNING ${COLUMNS}`,
      [
        a.id,
        a.call_key,
        a.token_id,
        a.project_id,
        a.environment,
        a.role,
        a.session_id,
        a.gateway_id,
        a.server,
        a.tool,
        a.capability,
        JSON.stringify(a.arguments),
        a.arguments_hash,
        a.rule,
        a.separate_approver,
        a.ttl_seconds,
        a.requested_decision_id,
        a.expires_at,
        a.kind,
      ],
    );
    return rows[0]!;
  },

  async get(db: Db, id: string): Promise<ApprovalRow | undefined> {
    const { rows } = await db.query<ApprovalRow>(`SELECT ${COLUMNS} FROM approvals WHERE id = $1`, [id]);
    return rows[0];
  },

  async list(db: Db, f: ApprovalFilter): Promise<ApprovalRow[]> {
    const c = conditions();
    if (f.kind) c.add('kind = ?', f.kind);
    if (f.state) c.add(`${EFFECTIVE_STATE} = ?`, f.state);
    if (f.token) c.add('token_id = ?', f.token);
    if (f.server) c.add('server = ?', f.server);
    if (f.projects) c.add('project_id = ANY(?)', f.projects);
    const { rows } = await db.query<ApprovalRow>(`SELECT ${COLUMNS} FROM approvals ${c.where()} ORDER BY created_at DESC, id DESC LIMIT ${c.arg(f.limit)}`, c.args);
    return rows;
  },

  /**
   * A human decision on a pending request that has not expired. The window restarts at the decision: an
   * approval then lasts `ttl_seconds` for its one call, a rejection refuses identical calls as long.
   */
  async decide(db: Db, id: string, state: 'approved' | 'rejected', by: string, byName: string, reason: string): Promise<ApprovalRow | undefined> {
    const { rows } = await db.query<ApprovalRow>(
      `UPDATE approvals SET state = $2, decided_at = now(), decided_by = $3, decided_by_name = $4, reason = $5, expires_at = now() + make_interval(secs => ttl_seconds)
       WHERE id = $1 AND state = 'pending' AND expires_at > now() RETURNING ${COLUMNS}`,
      [id, state, by, byName, reason],
    );
    return rows[0];
  },

  /** A production grant approved: the request now lasts as long as the grant it created. */
  async grantCreated(db: Db, id: string, grantId: string, expiresAt: Date): Promise<ApprovalRow | undefined> {
    const { rows } = await db.query<ApprovalRow>(
      `UPDATE approvals SET grant_id = $2, expires_at = $3 WHERE id = $1 AND kind = 'production_grant' AND state = 'approved' RETURNING ${COLUMNS}`,
      [id, grantId, expiresAt],
    );
    return rows[0];
  },

  /** The one use of an approval: atomic across replicas (only one UPDATE can match). */
  async use(db: Db, id: string, key: string, decisionId: string): Promise<ApprovalRow | undefined> {
    const { rows } = await db.query<ApprovalRow>(
      `UPDATE approvals SET state = 'used', used_at = now(), used_decision_id = $3
       WHERE id = $1 AND call_key = $2 AND kind = 'call' AND state = 'approved' AND expires_at > now() RETURNING ${COLUMNS}`,
      [id, key, decisionId],
    );
    return rows[0];
  },

  /** Undoes `use` for a call that was denied after all: approved again, if still within its window. */
  async release(db: Db, id: string, decisionId: string): Promise<ApprovalRow | undefined> {
    const { rows } = await db.query<ApprovalRow>(
      `UPDATE approvals SET state = 'approved', used_at = NULL, used_decision_id = NULL
       WHERE id = $1 AND state = 'used' AND used_decision_id = $2 AND expires_at > now() RETURNING ${COLUMNS}`,
      [id, decisionId],
    );
    return rows[0];
  },

  /** Records expiries (each row once, whichever replica gets there first). */
  async expire(db: Db, ids?: readonly string[]): Promise<ApprovalRow[]> {
    const { rows } = await db.query<ApprovalRow>(
      `UPDATE approvals SET state = 'expired' WHERE state IN ('pending', 'approved') AND expires_at <= now() ${ids ? 'AND id = ANY($1)' : ''}
       RETURNING ${COLUMNS.replace(`${EFFECTIVE_STATE} AS state`, 'state')}`,
      ids ? [ids] : [],
    );
    return rows;
  },

  /** What Redis must hold: requests and approvals still in force, and rejections still refusing. */
  async live(db: Db): Promise<ApprovalRow[]> {
    const { rows } = await db.query<ApprovalRow>(`SELECT ${COLUMNS} FROM approvals WHERE state IN ('pending', 'approved', 'rejected') AND expires_at > now()`);
    return rows;
  },

  /**
   * Retention (src/retention): removes up to `limit` settled requests whose last change (request,
   * decision, use, end of window) is before `cutoff`. Settled is the stored state rejected, expired or
   * used: a pending or approved row stays, even past its deadline, until the sweeper has recorded (and
   * audited) its expiry; a rejection no longer refuses anything and a used approval can no longer be
   * released once its window is over. Nothing references an approval row (Redis forgets it one window
   * after its end, at most a day); the audit trail holds every step of it.
   */
  async deleteSettledBefore(db: Db, cutoff: Date, limit: number): Promise<number> {
    const settled = "state IN ('rejected', 'expired', 'used') AND GREATEST(created_at, decided_at, used_at, expires_at) < $1";
    const { rowCount } = await db.query(
      `DELETE FROM approvals WHERE id IN (SELECT id FROM approvals WHERE created_at < $1 AND ${settled} LIMIT $2) AND ${settled}`,
      [cutoff, limit],
    );
    return rowCount ?? 0;
  },
};
