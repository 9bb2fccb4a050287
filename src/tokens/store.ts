import type { Pool, PoolClient } from '../db/pool.js';
import { REQUEST_QUERY_TIMEOUT_MS, withQueryTimeout } from '../db/query-timeout.js';
import { type Conditions, conditions } from '../db/where.js';
import type { TokenType } from './format.js';

// The only code that writes SQL for credentials (agent tokens, gateway keys, operator keys).

export type OperatorRole = 'viewer' | 'operator' | 'owner';

/** Advisory lock space of the first owner key (kills use 7007, halt copies 7008, records retention 7009). */
const FIRST_OWNER_LOCK_SPACE = 7010;
export type Environment = 'development' | 'staging' | 'production';
export const ENVIRONMENTS: readonly Environment[] = ['development', 'staging', 'production'];

export interface AgentTokenRow {
  id: string;
  type: TokenType;
  key_prefix: string;
  display_prefix: string;
  scopes: string[];
  role: string;
  project_id: string;
  environment: Environment;
  description: string;
  created_by: string;
  /**
   * Operators who rotated this token or a token it was rotated from: each received a raw
   * secret of it, so with `created_by` they are its secret holders (the `separate_approver` rule).
   */
  rotated_by: string[];
  /** The token this one was rotated into, and when (a rotated token cannot be rotated again). */
  rotated_to: string | null;
  rotated_at: Date | null;
  created_at: Date;
  expires_at: Date | null;
  revoked_at: Date | null;
  revoked_by: string | null;
  revoke_reason: string | null;
  last_used_at: Date | null;
}

/** A halt in force on an agent token (token_halts; sessions/store.ts writes them). */
export interface TokenHaltRow {
  token_id: string;
  trigger: string;
  halted_at: Date;
}

export interface GatewayKeyRow {
  id: string;
  name: string;
  display_prefix: string;
  created_by: string;
  created_at: Date;
  expires_at: Date | null;
  revoked_at: Date | null;
  last_used_at: Date | null;
}

export interface OperatorKeyRow extends GatewayKeyRow {
  role: OperatorRole;
  projects: string[] | null;
}

export type CredentialTable = 'agent_tokens' | 'gateway_keys' | 'operator_keys';

/** A gateway or operator key's revocation: when, and whether this call made it (false: it was revoked already). */
export interface KeyRevocation {
  revokedAt: Date;
  revokedNow: boolean;
}

/** Which live agent tokens a bulk revoke takes; every given field narrows. */
export interface BulkTokenFilter {
  project?: string | undefined;
  type?: TokenType | undefined;
  /** The stored actor, e.g. "operator:<id>". */
  createdBy?: string | undefined;
  createdBefore?: Date | undefined;
  /** Idle since before this: last used before it, or never used and created before it. */
  lastUsedBefore?: Date | undefined;
  /** Project-limited operators: only these projects. null: all. */
  projects: readonly string[] | null;
}

function bulkConditions(f: BulkTokenFilter): Conditions {
  const c = conditions();
  c.list.push('revoked_at IS NULL');
  if (f.project) c.add('project_id = ?', f.project);
  if (f.type) c.add('type = ?', f.type);
  if (f.createdBy) c.add('created_by = ?', f.createdBy);
  if (f.createdBefore) c.add('created_at < ?', f.createdBefore);
  if (f.lastUsedBefore) c.add('COALESCE(last_used_at, created_at) < ?', f.lastUsedBefore);
  if (f.projects) c.add('project_id = ANY(?::text[])', [...f.projects]);
  return c;
}

type Queryable = Pool | PoolClient;

const AGENT_COLUMNS =
  'id, type, key_prefix, display_prefix, scopes, role, project_id, environment, description, created_by, rotated_by, rotated_to, rotated_at, created_at, expires_at, revoked_at, revoked_by, revoke_reason, last_used_at';
const GATEWAY_COLUMNS = 'id, name, display_prefix, created_by, created_at, expires_at, revoked_at, last_used_at';
const OPERATOR_COLUMNS = `${GATEWAY_COLUMNS}, role, projects`;

export const credentialStore = {
  async insertAgentToken(
    db: Queryable,
    t: Omit<AgentTokenRow, 'rotated_by' | 'rotated_to' | 'rotated_at' | 'created_at' | 'revoked_at' | 'revoked_by' | 'revoke_reason' | 'last_used_at'> & { key_hash: Buffer; rotated_by?: string[] },
  ): Promise<AgentTokenRow> {
    const { rows } = await db.query<AgentTokenRow>(
      `INSERT INTO agent_tokens (id, type, key_prefix, display_prefix, key_hash, scopes, role, project_id, environment, description, created_by, rotated_by, expires_at)
       VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13) RETURNING ${AGENT_COLUMNS}`,
      [t.id, t.type, t.key_prefix, t.display_prefix, t.key_hash, t.scopes, t.role, t.project_id, t.environment, t.description, t.created_by, t.rotated_by ?? [], t.expires_at],
    );
    return rows[0]!;
  },

  async listAgentTokens(
    db: Queryable,
    f: { type?: TokenType; project?: string; revoked?: boolean; projects?: string[] | null; limit: number; before?: string },
  ): Promise<AgentTokenRow[]> {
    const c = conditions();
    if (f.type) c.add('type = ?', f.type);
    if (f.project) c.add('project_id = ?', f.project);
    if (f.projects) c.add('project_id = ANY(?)', f.projects);
    if (f.revoked === true) c.list.push('revoked_at IS NOT NULL');
    if (f.revoked === false) c.list.push('revoked_at IS NULL');
    if (f.before) c.add('id < ?', f.before);
    const { rows } = await db.query<AgentTokenRow>(`SELECT ${AGENT_COLUMNS} FROM agent_tokens ${c.where()} ORDER BY id DESC LIMIT ${c.arg(f.limit)}`, c.args);
    return rows;
  },

  /** The halts in force (resumed_at IS NULL: at most one per token) of these tokens. */
  async activeHalts(db: Queryable, tokenIds: readonly string[]): Promise<TokenHaltRow[]> {
    if (tokenIds.length === 0) return [];
    const { rows } = await db.query<TokenHaltRow>('SELECT token_id, trigger, halted_at FROM token_halts WHERE token_id = ANY($1::uuid[]) AND resumed_at IS NULL', [[...tokenIds]]);
    return rows;
  },

  async getAgentToken(db: Queryable, id: string): Promise<AgentTokenRow | undefined> {
    const { rows } = await db.query<AgentTokenRow>(`SELECT ${AGENT_COLUMNS} FROM agent_tokens WHERE id = $1`, [id]);
    return rows[0];
  },

  /**
   * Revokes an agent token unless it already is (then it keeps its first revoked_at, revoked_by and reason);
   * `revokedNow` tells which. Not `revoked_at = now()` after the fact: now() is the transaction's start, which
   * another transaction can share. The UPDATE only takes a live token: a second revoke waiting on the row lock
   * re-checks `revoked_at IS NULL` against the first one's committed row and takes nothing, and the SELECT
   * after it (a new statement, a new snapshot) reads the first revocation.
   */
  async revokeAgentToken(db: Queryable, id: string, by: string, reason: string): Promise<{ row: AgentTokenRow; revokedNow: boolean } | undefined> {
    const { rows } = await db.query<AgentTokenRow>(
      `UPDATE agent_tokens SET revoked_at = now(), revoked_by = $2, revoke_reason = $3 WHERE id = $1 AND revoked_at IS NULL RETURNING ${AGENT_COLUMNS}`,
      [id, by, reason],
    );
    if (rows[0]) return { row: rows[0], revokedNow: true };
    const row = await this.getAgentToken(db, id);
    return row && { row, revokedNow: false };
  },

  /**
   * Live agent tokens (not revoked) matching a bulk filter, oldest first; `forUpdate` locks them (inside a
   * transaction) so the count an operator confirmed is the set that gets revoked.
   */
  async matchBulk(db: Queryable, f: BulkTokenFilter, opts: { limit: number; forUpdate?: boolean }): Promise<AgentTokenRow[]> {
    const c = bulkConditions(f);
    const { rows } = await db.query<AgentTokenRow>(
      `SELECT ${AGENT_COLUMNS} FROM agent_tokens ${c.where()} ORDER BY created_at, id LIMIT ${c.arg(opts.limit)}${opts.forUpdate ? ' FOR UPDATE' : ''}`,
      c.args,
    );
    return rows;
  },

  async countBulk(db: Queryable, f: BulkTokenFilter): Promise<number> {
    const c = bulkConditions(f);
    const { rows } = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM agent_tokens ${c.where()}`, c.args);
    return rows[0]!.n;
  },

  async revokeAgentTokens(db: Queryable, ids: string[], by: string, reason: string): Promise<AgentTokenRow[]> {
    if (ids.length === 0) return [];
    const { rows } = await db.query<AgentTokenRow>(
      `UPDATE agent_tokens SET revoked_at = now(), revoked_by = $2, revoke_reason = $3 WHERE id = ANY($1::uuid[]) AND revoked_at IS NULL RETURNING ${AGENT_COLUMNS}`,
      [ids, by, reason],
    );
    return rows;
  },

  /** A project's agent tokens: every one it ever had (revoked and expired ones too), and the live ones. */
  async countProjectTokens(db: Queryable, projectId: string): Promise<{ total: number; live: number }> {
    const { rows } = await db.query<{ total: number; live: number }>(
      `SELECT count(*)::int AS total, (count(*) FILTER (WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())))::int AS live
       FROM agent_tokens WHERE project_id = $1`,
      [projectId],
    );
    return rows[0]!;
  },

  async lockAgentToken(db: PoolClient, id: string): Promise<AgentTokenRow | undefined> {
    const { rows } = await db.query<AgentTokenRow>(`SELECT ${AGENT_COLUMNS} FROM agent_tokens WHERE id = $1 FOR UPDATE`, [id]);
    return rows[0];
  },

  /** Records the rotation into `successor` and ends the token's life at `at` at the latest (an earlier expiry stays). */
  async markRotated(db: Queryable, id: string, successor: string, at: Date): Promise<AgentTokenRow> {
    const { rows } = await db.query<AgentTokenRow>(
      `UPDATE agent_tokens SET expires_at = LEAST(COALESCE(expires_at, $2), $2), rotated_to = $3, rotated_at = now() WHERE id = $1 RETURNING ${AGENT_COLUMNS}`,
      [id, at, successor],
    );
    return rows[0]!;
  },

  async insertGatewayKey(db: Queryable, k: { id: string; name: string; display_prefix: string; key_hash: Buffer; created_by: string; expires_at: Date | null }): Promise<GatewayKeyRow> {
    const { rows } = await db.query<GatewayKeyRow>(
      `INSERT INTO gateway_keys (id, name, display_prefix, key_hash, created_by, expires_at) VALUES ($1,$2,$3,$4,$5,$6) RETURNING ${GATEWAY_COLUMNS}`,
      [k.id, k.name, k.display_prefix, k.key_hash, k.created_by, k.expires_at],
    );
    return rows[0]!;
  },

  async insertOperatorKey(
    db: Queryable,
    k: { id: string; name: string; role: OperatorRole; projects: string[] | null; display_prefix: string; key_hash: Buffer; created_by: string; expires_at: Date | null },
  ): Promise<OperatorKeyRow> {
    const { rows } = await db.query<OperatorKeyRow>(
      `INSERT INTO operator_keys (id, name, role, projects, display_prefix, key_hash, created_by, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) RETURNING ${OPERATOR_COLUMNS}`,
      [k.id, k.name, k.role, k.projects, k.display_prefix, k.key_hash, k.created_by, k.expires_at],
    );
    return rows[0]!;
  },

  async listKeys<T extends 'gateway_keys' | 'operator_keys'>(db: Queryable, table: T): Promise<T extends 'operator_keys' ? OperatorKeyRow[] : GatewayKeyRow[]> {
    const cols = table === 'operator_keys' ? OPERATOR_COLUMNS : GATEWAY_COLUMNS;
    const { rows } = await db.query(`SELECT ${cols} FROM ${table} ORDER BY created_at DESC, id DESC`);
    return rows as never;
  },

  /**
   * Revokes a gateway or operator key unless it already is (then it keeps its first revoked_at): when it was
   * revoked and whether by this call, or undefined for no such key. Sound against a revoke at once as
   * revokeAgentToken is.
   */
  async revokeKey(db: Queryable, table: 'gateway_keys' | 'operator_keys', id: string): Promise<KeyRevocation | undefined> {
    const { rows } = await db.query<{ revoked_at: Date }>(`UPDATE ${table} SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING revoked_at`, [id]);
    if (rows[0]) return { revokedAt: rows[0].revoked_at, revokedNow: true };
    const { rows: before } = await db.query<{ revoked_at: Date }>(`SELECT revoked_at FROM ${table} WHERE id = $1`, [id]);
    return before[0] && { revokedAt: before[0].revoked_at, revokedNow: false };
  },

  /**
   * Revokes an operator key, unless it is the last live (unrevoked, unexpired) owner key limited to no
   * project, or the one of them that lasts longest: then nobody could create or revoke operator keys any
   * more (at once, or once the others expire), short of the database. The
   * owner keys are locked first (in one order), so two revokes at once cannot each leave the other's.
   */
  async revokeOperatorKey(c: PoolClient, id: string): Promise<KeyRevocation | 'not_found' | 'last_owner'> {
    const { rows } = await c.query<{ id: string; expires_at: Date | null }>(
      `SELECT id, expires_at FROM operator_keys WHERE role = 'owner' AND projects IS NULL AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
        ORDER BY id FOR UPDATE`,
    );
    // Nor the one that lasts longest: the others expiring before it would leave nobody in the end (an owner
    // key that expires in a minute must not be able to revoke the one that never does).
    const target = rows.find((r) => r.id === id);
    const lasts = (r: { expires_at: Date | null }) => (r.expires_at === null ? Number.POSITIVE_INFINITY : r.expires_at.getTime());
    if (target && rows.every((r) => r.id === id || lasts(r) < lasts(target))) return 'last_owner';
    return (await this.revokeKey(c, 'operator_keys', id)) ?? 'not_found';
  },

  /** Serialises the first start's "no operator key yet? then make the owner's" across replicas (transaction-scoped). */
  async lockFirstOwner(c: PoolClient): Promise<void> {
    await c.query('SELECT pg_advisory_xact_lock($1, 1)', [FIRST_OWNER_LOCK_SPACE]);
  },

  async countOperatorKeys(db: Queryable): Promise<number> {
    const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM operator_keys');
    return rows[0]!.n;
  },

  /** Finds a credential by its keyed hash, in the table its prefix names. */
  async findByHash(db: Queryable, table: CredentialTable, hash: Buffer, timeoutMs = REQUEST_QUERY_TIMEOUT_MS): Promise<(Record<string, unknown> & { key_hash: Buffer }) | undefined> {
    const cols = table === 'agent_tokens' ? AGENT_COLUMNS : table === 'operator_keys' ? OPERATOR_COLUMNS : GATEWAY_COLUMNS;
    // On every request whose credential is not cached: a Postgres that hangs fails it fast (503), not never.
    const { rows } = await db.query(withQueryTimeout({ text: `SELECT ${cols}, key_hash FROM ${table} WHERE key_hash = $1`, values: [hash] }, timeoutMs));
    return rows[0];
  },

  async touchLastUsed(db: Queryable, table: CredentialTable, ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    await db.query(`UPDATE ${table} SET last_used_at = now() WHERE id = ANY($1::uuid[])`, [ids]);
  },

  async getSetting(db: Queryable, key: string): Promise<string | undefined> {
    const { rows } = await db.query<{ value: string }>('SELECT value FROM settings WHERE key = $1', [key]);
    return rows[0]?.value;
  },

  /** Stores `value` unless the key exists; returns whichever value won. */
  async putSettingOnce(db: Queryable, key: string, value: string): Promise<string> {
    await db.query('INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING', [key, value]);
    return (await credentialStore.getSetting(db, key))!;
  },
};
