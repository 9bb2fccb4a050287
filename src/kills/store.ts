import type { Pool, PoolClient } from '../db/pool.js';
import { conditions } from '../db/where.js';
import type { KillTargetKind } from './keys.js';

// The only code that writes SQL for kills.

type Queryable = Pool | PoolClient;

export type KillState = 'active' | 'lifted' | 'expired';

export interface KillRow {
  id: string;
  target: KillTargetKind;
  target_key: string;
  server: string | null;
  capability: 'read' | 'write' | 'delete' | null;
  token_id: string | null;
  project_id: string | null;
  role: string | null;
  environment: 'development' | 'staging' | 'production' | null;
  session_id: string | null;
  reason: string;
  created_by: string;
  created_at: Date;
  expires_at: Date | null;
  lifted_at: Date | null;
  lifted_by: string | null;
  lift_reason: string | null;
  state: KillState;
}

/** A kill's events on the incident timeline: 0 created, 1 lifted, 2 expired. */
export type KillEvent = 0 | 1 | 2;
export type KillEventRow = KillRow & { at: Date; event: KillEvent };

/** What the gate's Redis key of one target must hold: the kill that lasts longest, and until when. */
export interface TargetState {
  /** The kill named in denials: the longest-lasting one of this target (newest on a tie). */
  kill: KillRow;
  /** Milliseconds until the last kill of this target expires; null while any has no expiry. */
  ttlMs: number | null;
}

const COLUMNS = `id, target, target_key, server, capability, token_id, project_id, role, environment, session_id, reason, created_by, created_at,
  expires_at, lifted_at, lifted_by, lift_reason,
  CASE WHEN lifted_at IS NOT NULL THEN 'lifted' WHEN expires_at IS NOT NULL AND expires_at <= now() THEN 'expired' ELSE 'active' END AS state`;
const ACTIVE = 'lifted_at IS NULL AND (expires_at IS NULL OR expires_at > now())';
// Two-key advisory locks: the first key names this lock space, so it cannot meet other modules' locks.
const LOCK_SPACE = 7007;

export interface KillFilter {
  state?: KillState | 'all';
  /** Project-limited operators: kills of these projects plus kills that belong to no project. null: all. */
  visibleProjects: readonly string[] | null;
  limit: number;
  /** Keyset: only kills with a smaller (older) id. */
  before?: string;
}

export const killStore = {
  /** Serialises every change of one target's Redis key (create, lift, expiry, reload) across replicas. */
  async lockTarget(c: PoolClient, targetKey: string): Promise<void> {
    await c.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [LOCK_SPACE, targetKey]);
  },

  async insert(
    db: Queryable,
    k: Omit<KillRow, 'created_at' | 'lifted_at' | 'lifted_by' | 'lift_reason' | 'state' | 'expires_at'> & { expiresInS: number | null },
  ): Promise<KillRow> {
    const { rows } = await db.query<KillRow>(
      `INSERT INTO kills (id, target, target_key, server, capability, token_id, project_id, role, environment, session_id, reason, created_by, expires_at)
       VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12, CASE WHEN $13::int IS NULL THEN NULL ELSE now() + make_interval(secs => $13::int) END)
       RETURNING ${COLUMNS}`,
      [k.id, k.target, k.target_key, k.server, k.capability, k.token_id, k.project_id, k.role, k.environment, k.session_id, k.reason, k.created_by, k.expiresInS],
    );
    return rows[0]!;
  },

  async get(db: Queryable, id: string): Promise<KillRow | undefined> {
    const { rows } = await db.query<KillRow>(`SELECT ${COLUMNS} FROM kills WHERE id = $1`, [id]);
    return rows[0];
  },

  async lockKill(c: PoolClient, id: string): Promise<KillRow | undefined> {
    const { rows } = await c.query<KillRow>(`SELECT ${COLUMNS} FROM kills WHERE id = $1 FOR UPDATE`, [id]);
    return rows[0];
  },

  async lift(c: PoolClient, id: string, by: string, reason: string): Promise<KillRow> {
    const { rows } = await c.query<KillRow>(`UPDATE kills SET lifted_at = now(), lifted_by = $2, lift_reason = $3 WHERE id = $1 RETURNING ${COLUMNS}`, [id, by, reason]);
    return rows[0]!;
  },

  /** Newest first. */
  async list(db: Queryable, f: KillFilter): Promise<KillRow[]> {
    const c = conditions();
    if (f.state === 'active' || f.state === undefined) c.list.push(ACTIVE);
    else if (f.state === 'lifted') c.list.push('lifted_at IS NOT NULL');
    else if (f.state === 'expired') c.list.push('lifted_at IS NULL AND expires_at <= now()');
    if (f.visibleProjects) c.add('(project_id IS NULL OR project_id = ANY(?::text[]))', [...f.visibleProjects]);
    if (f.before) c.add('id < ?::uuid', f.before);
    const { rows } = await db.query<KillRow>(`SELECT ${COLUMNS} FROM kills ${c.where()} ORDER BY id DESC LIMIT ${c.arg(f.limit)}`, c.args);
    return rows;
  },

  /** What the Redis key of `targetKey` must be now (undefined: no kill in force, delete it). */
  async targetState(db: Queryable, targetKey: string): Promise<TargetState | undefined> {
    const { rows } = await db.query<KillRow & { ttl_ms: number | null; any_forever: boolean }>(
      `SELECT ${COLUMNS},
         bool_or(expires_at IS NULL) OVER () AS any_forever,
         ceil(extract(epoch FROM (max(expires_at) OVER () - now())) * 1000)::bigint AS ttl_ms
       FROM kills WHERE target_key = $1 AND ${ACTIVE}
       ORDER BY expires_at DESC NULLS FIRST, id DESC LIMIT 1`,
      [targetKey],
    );
    const r = rows[0];
    if (!r) return undefined;
    const { ttl_ms, any_forever, ...kill } = r;
    return { kill, ttlMs: any_forever ? null : Math.max(1, Number(ttl_ms)) };
  },

  /** Target keys with a kill in force, plus those whose kills ended within `recentS` (to clear leftovers). */
  async targetKeysToSync(db: Queryable, recentS: number): Promise<string[]> {
    const { rows } = await db.query<{ target_key: string }>(
      `SELECT DISTINCT target_key FROM kills
       WHERE ${ACTIVE}
          OR lifted_at > now() - make_interval(secs => $1::int)
          OR (lifted_at IS NULL AND expires_at <= now() AND expires_at > now() - make_interval(secs => $1::int))`,
      [recentS],
    );
    return rows.map((r) => r.target_key);
  },

  async activeTargetKeys(db: Queryable): Promise<string[]> {
    const { rows } = await db.query<{ target_key: string }>(`SELECT DISTINCT target_key FROM kills WHERE ${ACTIVE}`);
    return rows.map((r) => r.target_key);
  },

  /** Expired kills nobody has recorded yet (oldest first). */
  async unrecordedExpiries(db: Queryable, limit: number): Promise<Array<{ id: string; target_key: string }>> {
    const { rows } = await db.query<{ id: string; target_key: string }>(
      `SELECT id, target_key FROM kills WHERE lifted_at IS NULL AND expiry_recorded_at IS NULL AND expires_at <= now() ORDER BY expires_at LIMIT $1`,
      [limit],
    );
    return rows;
  },

  /** Claims the expiry of one kill: only the first replica gets the row back. */
  async recordExpiry(c: PoolClient, id: string): Promise<KillRow | undefined> {
    const { rows } = await c.query<KillRow>(
      `UPDATE kills SET expiry_recorded_at = now() WHERE id = $1 AND lifted_at IS NULL AND expiry_recorded_at IS NULL AND expires_at <= now() RETURNING ${COLUMNS}`,
      [id],
    );
    return rows[0];
  },

  /**
   * The incident timeline's kill events in [from, to) of kills whose target is one of `keys` (null: any) or
   * belongs to `project`: each kill's creation, lift and expiry (an expiry nobody lifted, once it has
   * passed), one row per event, in the timeline's order of kill events (time in whole milliseconds, kill
   * id, then created / lifted / expired; src/incidents/cursor.ts). `after` continues after one such event.
   */
  async eventsInWindow(
    db: Queryable,
    f: {
      from: Date;
      to: Date;
      after?: { at: Date; id: string; event: KillEvent } | undefined;
      keys: string[] | null;
      project?: string | undefined;
      visibleProjects: readonly string[] | null;
      limit: number;
    },
  ): Promise<KillEventRow[]> {
    const c = conditions();
    c.add('e.at >= ?', f.from);
    c.add('e.at < ?', f.to);
    if (f.after) c.list.push(`(e.at, id, e.event) > (${c.arg(f.after.at)}::timestamptz, ${c.arg(f.after.id)}::uuid, ${c.arg(f.after.event)}::int)`);
    if (f.keys) {
      const match = `target_key = ANY(${c.arg(f.keys)}::text[])`;
      c.list.push(f.project ? `(${match} OR project_id = ${c.arg(f.project)})` : match);
    }
    if (f.visibleProjects) c.add('(project_id IS NULL OR project_id = ANY(?::text[]))', [...f.visibleProjects]);
    const { rows } = await db.query<KillEventRow>(
      `SELECT ${COLUMNS}, e.at, e.event FROM kills
       CROSS JOIN LATERAL (VALUES
         (date_trunc('milliseconds', created_at), 0),
         (date_trunc('milliseconds', lifted_at), 1),
         (CASE WHEN lifted_at IS NULL AND expires_at <= now() THEN date_trunc('milliseconds', expires_at) END, 2)
       ) AS e(at, event)
       ${c.where()} ORDER BY e.at, id, e.event LIMIT ${c.arg(f.limit)}`,
      c.args,
    );
    return rows;
  },
};
