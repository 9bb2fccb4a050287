import type { Pool } from '../db/pool.js';

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
}

// Alerts about the whole installation belong on every timeline, whatever its target.
export const GLOBAL_ALERT_KINDS = ['FLAG_DISABLED', 'FLAG_ENABLED', 'FLAGS_STALE', 'FLAGS_RECOVERED', 'DEPENDENCY_UNAVAILABLE', 'AUDIT_SPOOLING'];

class Where {
  readonly args: unknown[] = [];
  readonly parts: string[] = [];
  arg(v: unknown): string {
    this.args.push(v);
    return `$${this.args.length}`;
  }
  sql(): string {
    return this.parts.length ? `WHERE ${this.parts.join(' AND ')}` : '';
  }
}

export const timelineStore = {
  /**
   * Audit rows of the window, oldest first: decisions (INTENT), operator and system actions (ADMIN) and
   * policy reloads. Kill rows are left out: the kills table is their source (it also knows expiries).
   */
  async auditRows(db: Pool, q: WindowQuery): Promise<TimelineAuditRow[]> {
    const w = new Where();
    w.parts.push(`ts >= ${w.arg(q.from)}`, `ts < ${w.arg(q.to)}`);
    const kinds = ["kind IN ('ADMIN', 'POLICY_RELOAD') AND coalesce(action, '') NOT LIKE 'kill.%'"];
    if (q.decisions === 'all') kinds.push("kind = 'INTENT'");
    if (q.decisions === 'denials') kinds.push("kind = 'INTENT' AND decision = 'deny'");
    w.parts.push(`(${kinds.map((k) => `(${k})`).join(' OR ')})`);
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
      w.parts.push(`(${any.join(' OR ')})`);
    }
    // A key limited to projects sees its projects' rows, and the installation-wide ones every incident
    // timeline needs (policy reloads, flag changes: they carry no project and name no other project's data).
    if (q.visibleProjects) {
      w.parts.push(`(project_id = ANY(${w.arg([...q.visibleProjects])}::text[]) OR (project_id IS NULL AND (kind = 'POLICY_RELOAD' OR coalesce(action, '') LIKE 'flag.%')))`);
    }
    const { rows } = await db.query<TimelineAuditRow>(
      `SELECT id, ts, kind, actor_type, actor_id, token_id, project_id, environment, session_id, server, tool, capability, decision, code, message, action, target, decision_id, details
       FROM audit_events ${w.sql()} ORDER BY ts, id LIMIT ${w.arg(q.limit)}`,
      w.args,
    );
    return rows;
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

  /** Alerts of the window, oldest first. */
  async alerts(db: Pool, q: WindowQuery): Promise<TimelineAlertRow[]> {
    const w = new Where();
    w.parts.push(`created_at >= ${w.arg(q.from)}`, `created_at < ${w.arg(q.to)}`);
    const m = q.match;
    const any: string[] = [];
    if (m.server) any.push(`server = ${w.arg(m.server)}`);
    if (m.token) any.push(`token_id = ${w.arg(m.token)}`);
    if (m.sessionToken) any.push(`token_id = ${w.arg(m.sessionToken)}`);
    if (m.session) any.push(`session_id = ${w.arg(m.session)}`);
    if (m.project) any.push(`project_id = ${w.arg(m.project)}`);
    if (any.length > 0 || m.environment) {
      any.push(`kind = ANY(${w.arg(GLOBAL_ALERT_KINDS)}::text[])`);
      w.parts.push(`(${any.join(' OR ')})`);
    }
    if (q.visibleProjects) w.parts.push(`(project_id IS NULL OR project_id = ANY(${w.arg([...q.visibleProjects])}::text[]))`);
    const { rows } = await db.query<TimelineAlertRow>(
      `SELECT id, kind, severity, token_id, project_id, session_id, server, message, details, created_at FROM alerts ${w.sql()} ORDER BY created_at, id LIMIT ${w.arg(q.limit)}`,
      w.args,
    );
    return rows;
  },
};
