import type { Pool, PoolClient } from '../db/pool.js';
import { type Conditions, conditions } from '../db/where.js';
import type { AlertSeverity } from './kinds.js';

// The only code that writes SQL for alerts.

export interface Alert {
  id: string;
  /** One of ALERT_KINDS when raised by this version; older rows may hold kinds since renamed. */
  kind: string;
  severity: AlertSeverity;
  token_id: string | null;
  project_id: string | null;
  session_id: string | null;
  server: string | null;
  numbers: Record<string, number>;
  details: Record<string, unknown>;
  message: string;
  created_at: Date;
  acknowledged_at: Date | null;
  acknowledged_by: string | null;
  ack_note: string | null;
}

export interface AlertFilter {
  kinds?: string[];
  severities?: AlertSeverity[];
  token_id?: string;
  session_id?: string;
  server?: string;
  project_id?: string;
  /** Project-limited operators: only these projects, plus alerts without a project. null = all. */
  visible_projects: string[] | null;
  /** Only alerts of these projects, none without a project (what a project-limited key may acknowledge). */
  own_projects?: string[];
  /** details.<key> equals the value, as text, for each entry (FLAG_DISABLED's flag, KILL_CREATED's kill_id). */
  details?: Record<string, string>;
  /** details.<key> differs from the value (or is absent), for each entry: a halt still in force keeps its alert. */
  details_not?: Record<string, string>;
  acknowledged?: boolean;
  from?: Date;
  to?: Date;
  /** Keyset cursor: only alerts with a smaller (older) id. */
  before?: string;
  /** Only alerts with a larger (newer) id, oldest first (stream replay). */
  after?: string;
  limit: number;
}

type Queryable = Pool | PoolClient;

/** Which open alert raiseOrUpdate rewrites: details[detail] is value, on that server and of that project when given. */
export interface OpenMatch {
  server?: string;
  project_id?: string;
  /** Only alerts of this agent token (its index makes the lookup read that token's alerts alone). */
  token_id?: string;
  detail: string;
  value: string;
}

function filterConditions(f: Omit<AlertFilter, 'limit'>): Conditions {
  const c = conditions();
  if (f.kinds?.length) c.add('kind = ANY(?::text[])', f.kinds);
  if (f.severities?.length) c.add('severity = ANY(?::text[])', f.severities);
  if (f.token_id) c.add('token_id = ?', f.token_id);
  if (f.session_id) c.add('session_id = ?', f.session_id);
  if (f.server) c.add('server = ?', f.server);
  if (f.project_id) c.add('project_id = ?', f.project_id);
  if (f.visible_projects) c.add('(project_id IS NULL OR project_id = ANY(?::text[]))', f.visible_projects);
  if (f.own_projects) c.add('project_id = ANY(?::text[])', f.own_projects);
  for (const [k, v] of Object.entries(f.details ?? {})) c.list.push(`details->>(${c.arg(k)}::text) = ${c.arg(v)}`);
  for (const [k, v] of Object.entries(f.details_not ?? {})) c.list.push(`details->>(${c.arg(k)}::text) IS DISTINCT FROM ${c.arg(v)}`);
  if (f.acknowledged === true) c.list.push('acknowledged_at IS NOT NULL');
  if (f.acknowledged === false) c.list.push('acknowledged_at IS NULL');
  if (f.from) c.add('created_at >= ?', f.from);
  if (f.to) c.add('created_at < ?', f.to);
  if (f.before) c.add('id < ?::uuid', f.before);
  if (f.after) c.add('id > ?::uuid', f.after);
  return c;
}

const COLUMNS =
  'id, kind, severity, token_id, project_id, session_id, server, numbers, details, message, created_at, acknowledged_at, acknowledged_by, ack_note';

export const alertStore = {
  /**
   * The newest open (unacknowledged) alert of a kind (and server, and project, when given) whose
   * details[detail] is value, locked for update; the caller holds a transaction.
   */
  async openMatching(db: PoolClient, m: OpenMatch & { kind: string }): Promise<Alert | undefined> {
    const args: unknown[] = [m.kind, m.detail, m.value];
    let where = 'kind = $1 AND details->>$2 = $3';
    if (m.server !== undefined) where += ` AND server = $${args.push(m.server)}`;
    if (m.project_id !== undefined) where += ` AND project_id = $${args.push(m.project_id)}`;
    if (m.token_id !== undefined) where += ` AND token_id = $${args.push(m.token_id)}`;
    const { rows } = await db.query<Alert>(`SELECT ${COLUMNS} FROM alerts WHERE ${where} AND acknowledged_at IS NULL ORDER BY id DESC LIMIT 1 FOR UPDATE`, args);
    return rows[0];
  },

  /** Rewrites what an alert says; its id, time, kind and subject stay. */
  async rewrite(db: Queryable, id: string, a: Pick<Alert, 'severity' | 'message' | 'numbers' | 'details'>): Promise<Alert | undefined> {
    const { rows } = await db.query<Alert>(`UPDATE alerts SET severity = $2, message = $3, numbers = $4, details = $5 WHERE id = $1 RETURNING ${COLUMNS}`, [
      id,
      a.severity,
      a.message,
      JSON.stringify(a.numbers),
      JSON.stringify(a.details),
    ]);
    return rows[0];
  },

  async insert(db: Queryable, a: Omit<Alert, 'acknowledged_at' | 'acknowledged_by' | 'ack_note'>): Promise<void> {
    await db.query(
      `INSERT INTO alerts (id, kind, severity, token_id, project_id, session_id, server, numbers, details, message, created_at)
       VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)`,
      [a.id, a.kind, a.severity, a.token_id, a.project_id, a.session_id, a.server, JSON.stringify(a.numbers), JSON.stringify(a.details), a.message, a.created_at],
    );
  },

  async list(db: Queryable, f: AlertFilter): Promise<Alert[]> {
    const c = filterConditions(f);
    const order = f.after ? 'ASC' : 'DESC';
    const { rows } = await db.query<Alert>(`SELECT ${COLUMNS} FROM alerts ${c.where()} ORDER BY id ${order} LIMIT ${c.arg(f.limit)}`, c.args);
    return rows;
  },

  /** How many alerts match (the filter's limit and cursors as in list). */
  async count(db: Queryable, f: Omit<AlertFilter, 'limit'>): Promise<number> {
    const c = filterConditions(f);
    const { rows } = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM alerts ${c.where()}`, c.args);
    return rows[0]?.n ?? 0;
  },

  async get(db: Queryable, id: string): Promise<Alert | undefined> {
    const { rows } = await db.query<Alert>(`SELECT ${COLUMNS} FROM alerts WHERE id = $1`, [id]);
    return rows[0];
  },

  /** Acknowledges once: returns undefined when the alert is unknown or already acknowledged. */
  async acknowledge(db: Queryable, id: string, by: string, note: string | null): Promise<Alert | undefined> {
    const { rows } = await db.query<Alert>(
      `UPDATE alerts SET acknowledged_at = now(), acknowledged_by = $2, ack_note = $3
       WHERE id = $1 AND acknowledged_at IS NULL RETURNING ${COLUMNS}`,
      [id, by, note],
    );
    return rows[0];
  },

  /**
   * Acknowledges the oldest `f.limit` open alerts that match, once each (an alert another request
   * acknowledged meanwhile is skipped: the outer condition is checked again on the locked row).
   * Returns them oldest first.
   */
  async acknowledgeMatching(db: Queryable, f: AlertFilter, by: string, note: string | null): Promise<Alert[]> {
    const c = filterConditions({ ...f, acknowledged: false });
    const limit = c.arg(f.limit);
    const { rows } = await db.query<Alert>(
      `UPDATE alerts SET acknowledged_at = now(), acknowledged_by = ${c.arg(by)}, ack_note = ${c.arg(note)}
       WHERE id IN (SELECT id FROM alerts ${c.where()} ORDER BY id LIMIT ${limit}) AND acknowledged_at IS NULL
       RETURNING ${COLUMNS}`,
      c.args,
    );
    return rows.sort((x, y) => (x.id < y.id ? -1 : 1));
  },

  /**
   * Retention (src/retention): removes up to `limit` alerts raised before `cutoff`, acknowledged or not.
   * Nothing references an alert; the events behind it are in the audit trail.
   */
  async deleteRaisedBefore(db: Queryable, cutoff: Date, limit: number): Promise<number> {
    const { rowCount } = await db.query('DELETE FROM alerts WHERE id IN (SELECT id FROM alerts WHERE created_at < $1 LIMIT $2) AND created_at < $1', [cutoff, limit]);
    return rowCount ?? 0;
  },
};
