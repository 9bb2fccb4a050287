import type { Pool, PoolClient } from '../db/pool.js';
import { conditions } from '../db/where.js';

type Db = Pool | PoolClient;

export type GrantKind = 'production' | 'large_results';

export interface GrantRow {
  id: string;
  kind: GrantKind;
  token_id: string;
  session_id: string | null;
  /** The environment a production grant opens; null for a large_results grant (any environment of the token). */
  environment: string | null;
  reason: string;
  created_by: string;
  created_at: Date;
  expires_at: Date;
  revoked_at: Date | null;
  revoked_by: string | null;
}

const COLUMNS = 'id, kind, token_id, session_id, environment, reason, created_by, created_at, expires_at, revoked_at, revoked_by';

export const grantStore = {
  async insert(db: Db, g: Omit<GrantRow, 'created_at' | 'revoked_at' | 'revoked_by'>): Promise<GrantRow> {
    const { rows } = await db.query<GrantRow>(
      `INSERT INTO grants (id, kind, token_id, session_id, environment, reason, created_by, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) RETURNING ${COLUMNS}`,
      [g.id, g.kind, g.token_id, g.session_id, g.environment, g.reason, g.created_by, g.expires_at],
    );
    return rows[0]!;
  },
  async active(db: Pool): Promise<GrantRow[]> {
    const { rows } = await db.query<GrantRow>(`SELECT ${COLUMNS} FROM grants WHERE revoked_at IS NULL AND expires_at > now()`);
    return rows;
  },
  /** Whether a grant of this kind covered the token (and session) at `at`, including one revoked or expired since. */
  async coveredAt(db: Pool, kind: GrantKind, tokenId: string, sessionId: string, at: Date): Promise<boolean> {
    const { rowCount } = await db.query(
      `SELECT 1 FROM grants WHERE kind = $1 AND token_id = $2 AND (session_id IS NULL OR session_id = $3)
         AND created_at <= $4 AND expires_at > $4 AND (revoked_at IS NULL OR revoked_at > $4) LIMIT 1`,
      [kind, tokenId, sessionId, at],
    );
    return (rowCount ?? 0) > 0;
  },
  /** Newest first, at most 500; `projects` keeps grants of those projects' tokens (before the limit). */
  async list(db: Pool, f: { token?: string; active?: boolean; projects?: readonly string[] }): Promise<GrantRow[]> {
    const c = conditions();
    if (f.token) c.add('token_id = ?', f.token);
    if (f.projects) c.add('token_id IN (SELECT id FROM agent_tokens WHERE project_id = ANY(?))', f.projects);
    if (f.active === true) c.list.push('revoked_at IS NULL AND expires_at > now()');
    const { rows } = await db.query<GrantRow>(`SELECT ${COLUMNS} FROM grants ${c.where()} ORDER BY created_at DESC LIMIT 500`, c.args);
    return rows;
  },
  async get(db: Pool, id: string): Promise<GrantRow | undefined> {
    const { rows } = await db.query<GrantRow>(`SELECT ${COLUMNS} FROM grants WHERE id = $1`, [id]);
    return rows[0];
  },
  async revoke(db: Pool, id: string, by: string): Promise<GrantRow | undefined> {
    const { rows } = await db.query<GrantRow>(`UPDATE grants SET revoked_at = COALESCE(revoked_at, now()), revoked_by = COALESCE(revoked_by, $2) WHERE id = $1 RETURNING ${COLUMNS}`, [id, by]);
    return rows[0];
  },
};
