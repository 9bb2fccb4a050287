import type { Pool } from '../db/pool.js';
import { type Conditions, conditions } from '../db/where.js';
import { type Position, RANK, SOURCE_ORDER } from './cursor.js';

// Read-only SQL of the incident timeline over the audit trail and the alerts (kills are read through
// src/kills/store.ts). Nothing here writes.

export interface TimelineAuditRow {
  id: string;
  ts: Date;
  kind: string;
  actor_type: string;
  actor_id: string | null;
  token_id: string | null;
  project_id: string | null;
  environment: string | null;
  session_id: string | null;
  server: string | null;
  tool: string | null;
  capability: string | null;
  decision: 'allow' | 'deny' | null;
  code: string | null;
  message: string | null;
  action: string | null;
  target: string | null;
  decision_id: string | null;
  details: Record<string, unknown> | null;
}

export interface TimelineAlertRow {
  id: string;
  kind: string;
  severity: string;
  token_id: string | null;
  project_id: string | null;
  session_id: string | null;
  server: string | null;
  message: string;
  details: Record<string, unknown>;
  created_at: Date;
}

/** What one timeline is about; every field narrows (none: everything in the window). */
export interface TimelineMatch {
  server?: string;
  token?: string;
  /** The token of a session target, so the token's halts, resumes and revocations show beside the session's calls. */
  sessionToken?: string;
  project?: string;
  session?: string;
  environment?: string;
}

export interface WindowQuery {
  from: Date;
  to: Date;
  match: TimelineMatch;
  decisions: 'all' | 'denials' | 'none';
  visibleProjects: readonly string[] | null;
  limit: number;
  /** Continue after this position (a cursor): only rows that come after it in the timeline's order. */
  after?: Position | undefined;
}

// Alerts about the whole installation belong on every timeline, whatever its target.
export const GLOBAL_ALERT_KINDS = ['FLAG_DISABLED', 'FLAG_ENABLED', 'FLAGS_STALE', 'FLAGS_RECOVERED', 'DEPENDENCY_UNAVAILABLE', 'AUDIT_SPOOLING', 'AUDIT_SPOOL_SET_ASIDE', 'DATABASE_RESTORED'];
/** Alerts that are the timeline's `flag_change` (a flag turned off or on), not its `alert`. */
export const FLAG_ALERT_KINDS = ['FLAG_DISABLED', 'FLAG_ENABLED'];

// The rank of each source's rows in the timeline's order (src/incidents/cursor.ts), as SQL: what
// src/incidents/service.ts makes of them (an INTENT row is a decision or denial, every other audit row an
// operator or system action; a FLAG_* alert is a flag change, any other an alert).
const AUDIT_RANK = `(CASE WHEN kind = 'INTENT' THEN ${RANK.decision} ELSE ${RANK.admin} END)`;
const ALERT_RANK = `(CASE WHEN kind IN (${FLAG_ALERT_KINDS.map((k) => `'${k}'`).join(', ')}) THEN ${RANK.flag_change} ELSE ${RANK.alert} END)`;
if (RANK.denial !== RANK.decision || [RANK.flag_change, RANK.revocation, RANK.rotation, RANK.resume, RANK.policy_change].some((r) => r !== RANK.admin)) {
  throw new Error('src/incidents/store.ts: AUDIT_RANK assumes decisions and denials share a rank, and so do all operator actions');
}

interface SourceSql {
  table: string;
  /** The row's time column. */
  ts: string;
  rank: string;
  source: number;
  columns: string;
  /** Adds the source's filters (everything but the window) to `w`. */
  filter(w: Conditions, q: WindowQuery): void;
}

/**
 * The first `q.limit` rows of one source in the timeline's order (time in whole milliseconds, rank, id)
 * within the window and after `q.after`, or more: every row of the last millisecond read. Read along the
 * (ts, id) index in time order, so a long window is not sorted whole; the index orders a millisecond's rows
 * by microseconds and the timeline by rank, so the last millisecond of that read is read again on its own,
 * in the timeline's order (cut where the index stops it, it would lose rows or repeat them on the next
 * page). Rows come back with their time truncated to the millisecond, as the order sees it.
 */
async function readInOrder<R extends object>(db: Pool, s: SourceSql, q: WindowQuery): Promise<R[]> {
  const ms = `date_trunc('milliseconds', ${s.ts})`;
  const timeOf = (r: R) => (r as Record<string, unknown>)[s.ts] as Date;
  const select = (w: Conditions, bounds: string[], order: string, limit: number) => {
    s.filter(w, q);
    w.list.push(...bounds, `${s.ts} < ${w.arg(q.to)}`);
    const a = q.after;
    const lower = a && a.at > q.from ? a.at : q.from;
    w.list.push(`${s.ts} >= ${w.arg(lower)}`);
    if (a) {
      w.list.push(
        `(${ms}, ${s.rank}, ${s.source}, id, 0) > (${w.arg(a.at)}::timestamptz, ${w.arg(a.rank)}::int, ${w.arg(a.source)}::int, ${w.arg(a.id)}::uuid, ${w.arg(a.sub)}::int)`,
      );
    }
    // `t.` is the column, not the truncated output of the same name.
    return db.query<R>(`SELECT ${ms} AS ${s.ts}, ${s.columns} FROM ${s.table} t ${w.where()} ORDER BY ${order} LIMIT ${w.arg(limit)}`, w.args);
  };
  const { rows } = await select(conditions(), [], `t.${s.ts}, t.id`, q.limit);
  const last = rows.at(-1);
  if (rows.length < q.limit || !last) return rows;
  const edge = timeOf(last);
  const w = conditions();
  const { rows: edgeRows } = await select(w, [`${s.ts} >= ${w.arg(edge)}`, `${s.ts} < ${w.arg(new Date(edge.getTime() + 1))}`], `${s.rank}, t.id`, q.limit);
  return [...rows.filter((r) => timeOf(r) < edge), ...edgeRows];
}

const AUDIT_SOURCE: SourceSql = {
  table: 'audit_events',
  ts: 'ts',
  rank: AUDIT_RANK,
  source: SOURCE_ORDER.audit,
  columns: 'id, kind, actor_type, actor_id, token_id, project_id, environment, session_id, server, tool, capability, decision, code, message, action, target, decision_id, details',
  filter(w, q) {
    const kinds = ["kind IN ('ADMIN', 'POLICY_RELOAD') AND coalesce(action, '') NOT LIKE 'kill.%'"];
    if (q.decisions === 'all') kinds.push("kind = 'INTENT'");
    if (q.decisions === 'denials') kinds.push("kind = 'INTENT' AND decision = 'deny'");
    w.list.push(`(${kinds.map((k) => `(${k})`).join(' OR ')})`);
    const m = q.match;
    const any: string[] = [];
    if (m.server) any.push(`server = ${w.arg(m.server)}`);
    if (m.token) {
      const t = w.arg(m.token);
      any.push(`token_id = ${t}`, `target = 'agent_token:' || ${t}`, `(action = 'key.bulk_revoked' AND details -> 'ids' ? ${t})`);
    }
    if (m.session) {
      const s = w.arg(m.session);
      any.push(`session_id = ${s}`, `target = 'session:' || ${s}`);
    }
    if (m.sessionToken) {
      const t = w.arg(m.sessionToken);
      any.push(`(kind <> 'INTENT' AND (target = 'agent_token:' || ${t} OR action = 'key.bulk_revoked' AND details -> 'ids' ? ${t}))`);
    }
    if (m.project) any.push(`project_id = ${w.arg(m.project)}`);
    if (m.environment) any.push(`environment = ${w.arg(m.environment)}`);
    if (any.length > 0) {
      // Policy reloads and flag changes (should the flags module audit them) concern every target.
      any.push("kind = 'POLICY_RELOAD'");
      // Flag changes concern every target, except a per-server capability flag of another server.
      if (m.server) {
        const srv = w.arg(m.server);
        any.push(`(coalesce(action, '') LIKE 'flag.%' AND (target !~ '^flag:mcp\\.[^.]+\\.(read|write|delete)$' OR target LIKE 'flag:mcp.' || ${srv} || '.%'))`);
      } else {
        any.push("coalesce(action, '') LIKE 'flag.%'");
      }
      w.list.push(`(${any.join(' OR ')})`);
    }
    // A key limited to projects sees its projects' rows, and the installation-wide ones every incident
    // timeline needs (policy reloads, flag changes: they carry no project and name no other project's data).
    if (q.visibleProjects) {
      w.list.push(`(project_id = ANY(${w.arg([...q.visibleProjects])}::text[]) OR (project_id IS NULL AND (kind = 'POLICY_RELOAD' OR coalesce(action, '') LIKE 'flag.%')))`);
    }
  },
};

/** A per-server capability flag (`mcp.<server>.<capability>`); its first group is the server. */
const SERVER_FLAG = /^mcp\.([a-z0-9_-]+)\.(read|write|delete)$/;

const ALERT_SOURCE: SourceSql = {
  table: 'alerts',
  ts: 'created_at',
  rank: ALERT_RANK,
  source: SOURCE_ORDER.alert,
  columns: 'id, kind, severity, token_id, project_id, session_id, server, message, details',
  filter(w, q) {
    const m = q.match;
    const any: string[] = [];
    if (m.server) any.push(`server = ${w.arg(m.server)}`);
    if (m.token) any.push(`token_id = ${w.arg(m.token)}`);
    if (m.sessionToken) any.push(`token_id = ${w.arg(m.sessionToken)}`);
    if (m.session) any.push(`session_id = ${w.arg(m.session)}`);
    if (m.project) any.push(`project_id = ${w.arg(m.project)}`);
    if (any.length > 0 || m.environment) {
      any.push(`kind = ANY(${w.arg(GLOBAL_ALERT_KINDS)}::text[])`);
      w.list.push(`(${any.join(' OR ')})`);
    }
    // A flag turned off or on about another server's capability does not belong on a server's timeline.
    // Here rather than after the read: a read cut at `limit` rows must not hold rows that are then dropped.
    if (m.server) {
      w.list.push(
        `(kind <> ALL(${w.arg(FLAG_ALERT_KINDS)}::text[]) OR coalesce(substring(details ->> 'flag' from ${w.arg(SERVER_FLAG.source)}::text), ${w.arg(m.server)}) = ${w.arg(m.server)})`,
      );
    }
    if (q.visibleProjects) w.list.push(`(project_id IS NULL OR project_id = ANY(${w.arg([...q.visibleProjects])}::text[]))`);
  },
};

export const timelineStore = {
  /** Whether an agent token (live or not) or a kill names the project: a `project:` target nothing names is a typo. */
  async projectNamed(db: Pool, project: string): Promise<boolean> {
    const { rows } = await db.query<{ named: boolean }>(
      'SELECT EXISTS (SELECT 1 FROM agent_tokens WHERE project_id = $1) OR EXISTS (SELECT 1 FROM kills WHERE project_id = $1) AS named',
      [project],
    );
    return rows[0]?.named === true;
  },

  /**
   * Audit rows of the window, oldest first: decisions (INTENT), operator and system actions (ADMIN) and
   * policy reloads. Kill rows are left out: the kills table is their source (it also knows expiries).
   */
  auditRows(db: Pool, q: WindowQuery): Promise<TimelineAuditRow[]> {
    return readInOrder<TimelineAuditRow>(db, AUDIT_SOURCE, q);
  },

  /**
   * Whose session this was, from the audit trail, for a session whose row is gone: retention removes closed
   * sessions after RECORDS_RETENTION_DAYS while their rows stay in audit_events for AUDIT_RETENTION_DAYS.
   * Best evidence first: an allowed decision (the gate checked that the session was issued to the calling
   * token), else the other decisions and results naming it, but only when they all name one token (a
   * denial before the gate, e.g. by a kill, flag or policy, did not check the session: another project's
   * token could have named the id). SESSION_UNKNOWN denials prove nothing and are not used: an id only
   * they name is unknown. Both read audit_events_session_idx (session_id, ts); `since` (the session's
   * opening time, from its UUIDv7 id, less a margin) skips older partitions.
   */
  async sessionOwner(db: Pool, sessionId: string, since: Date | null): Promise<{ token_id: string; project_id: string } | undefined> {
    const args: unknown[] = [sessionId];
    if (since) args.push(since);
    const pick = (rank: number, which: string) =>
      `(SELECT ${rank} AS rank, token_id, project_id FROM audit_events
        WHERE session_id = $1${since ? ' AND ts >= $2' : ''} AND token_id IS NOT NULL AND project_id IS NOT NULL AND ${which}
        ORDER BY ts LIMIT 1)`;
    const { rows } = await db.query<{ token_id: string; project_id: string }>(`SELECT token_id, project_id FROM ${pick(0, "kind = 'INTENT' AND decision = 'allow'")} o`, args);
    if (rows[0]) return rows[0];
    // No allowed call: its other rows were denied before the gate checked whose the session is, so any
    // token could have named it. They identify the owner only when they all name one token.
    const { rows: others } = await db.query<{ token_id: string; project_id: string; tokens: number }>(
      `SELECT min(token_id) AS token_id, min(project_id) AS project_id, count(DISTINCT token_id)::int AS tokens FROM audit_events
       WHERE session_id = $1${since ? ' AND ts >= $2' : ''} AND token_id IS NOT NULL AND project_id IS NOT NULL
         AND kind IN ('INTENT', 'RESULT') AND coalesce(code, '') <> 'SESSION_UNKNOWN'`,
      args,
    );
    const o = others[0];
    return o && o.tokens === 1 ? { token_id: o.token_id, project_id: o.project_id } : undefined;
  },

  /** Alerts of the window, oldest first (in the timeline's order). */
  alerts(db: Pool, q: WindowQuery): Promise<TimelineAlertRow[]> {
    return readInOrder<TimelineAlertRow>(db, ALERT_SOURCE, q);
  },

  /**
   * The names of operator keys by id. A key's name never changes and its row is never deleted (a revoked
   * key stays, with revoked_at), so this is the name the operator had when acting.
   */
  async operatorNames(db: Pool, ids: readonly string[]): Promise<Map<string, string>> {
    if (ids.length === 0) return new Map();
    const { rows } = await db.query<{ id: string; name: string }>('SELECT id::text AS id, name FROM operator_keys WHERE id = ANY($1::uuid[])', [ids]);
    return new Map(rows.map((r) => [r.id, r.name]));
  },
};
