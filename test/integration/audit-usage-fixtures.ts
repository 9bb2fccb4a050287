import type pg from 'pg';
import { v7 as uuidv7 } from 'uuid';
import type { AuditRecord } from '../../src/audit/record.js';
import { type AuditFilters, USAGE_COUNTS } from '../../src/audit/store.js';

// Shared by the usage rollup's test files (audit-usage-hourly, audit-usage-migration): audit rows on a
// fixed calendar, inserted as the writer does, and the raw aggregations usage ran before the rollup
// (migrations/0017_audit_usage_hourly.sql), which the rollup's answers must equal.

export const T1 = { token_id: 'tok-1', token_type: 'rw', project_id: 'proj-a' };
export const T2 = { token_id: 'tok-2', token_type: 'ro', project_id: 'proj-a' };
export const T3 = { token_id: 'tok-3', token_type: 'rw', project_id: 'proj-b' };
const OPERATIONS = [
  { server: 'filesystem', tool: 'write_file', capability: 'write' },
  { server: 'filesystem', tool: 'read_file', capability: 'read' },
  { server: 'postgres', tool: 'query', capability: 'read' },
  { server: null, tool: null, capability: null },
];
const STATUSES = ['success', 'ok', 'error', 'timeout'];

export type Row = Omit<Partial<AuditRecord>, 'ts'> & { ts: string; kind: string };
let seq = 0;

/** Inserts through the parent table as the writer does (one statement, ON CONFLICT DO NOTHING). */
export async function insert(pool: pg.Pool, rows: Row[]): Promise<number> {
  const full = rows.map((r) => ({ id: uuidv7(), replica_id: 'fixture', seq: ++seq, actor_type: r.token_id ? 'mcp_token' : 'system', prev_hash: 'x', hash: 'y', ...r }));
  const res = await pool.query('INSERT INTO audit_events SELECT * FROM json_populate_recordset(NULL::audit_events, $1::json) ON CONFLICT DO NOTHING', [JSON.stringify(full)]);
  return res.rowCount ?? 0;
}

/**
 * Every token and operation, INTENT and RESULT every `stepMin` minutes from `start` for `hours`, with a
 * second's jitter and rows exactly on hour boundaries; plus rows usage ignores (ADMIN, no token).
 */
export function fixtureRows(start: string, hours: number, stepMin: number): Row[] {
  const rows: Row[] = [];
  const t0 = Date.parse(start);
  let i = 0;
  for (let t = t0; t < t0 + hours * 3_600_000; t += stepMin * 60_000, i++) {
    const token = [T1, T2, T3][i % 3]!;
    const op = OPERATIONS[i % OPERATIONS.length]!;
    const ts = new Date(t + (i % 5 === 0 ? 0 : (i * 7919) % 59_000)).toISOString();
    const decision = i % 4 === 3 ? 'deny' : 'allow';
    rows.push({ ts, kind: 'INTENT', ...token, ...op, decision });
    if (decision === 'allow') {
      // Durations with exact binary fractions: sums and averages come out the same in any order.
      const duration = i % 6 === 0 ? null : (i % 40) + (i % 2) * 0.5;
      rows.push({ ts: new Date(Date.parse(ts) + 250).toISOString(), kind: 'RESULT', ...token, ...op, result_status: STATUSES[i % STATUSES.length]!, duration_ms: duration });
    }
    if (i % 10 === 0) rows.push({ ts, kind: 'ADMIN', action: 'key.created', target: 'k' });
    if (i % 11 === 0) rows.push({ ts, kind: 'INTENT', decision: 'deny', server: 'filesystem' });
  }
  return rows;
}

/** What GET /v1/usage ran before the rollup: every raw INTENT and RESULT of the window, GROUPING SETS. */
export async function rawUsage(db: pg.Pool, f: AuditFilters) {
  const { sql, args } = rawConditions(f);
  const { rows } = await db.query(
    `SELECT CASE WHEN grouping(server, tool, capability) = 0 THEN 'operation' WHEN grouping(day) = 0 THEN 'day' ELSE 'token' END AS grp,
       token_id, max(token_type) AS token_type, max(project_id) AS project_id, server, tool, capability, day::text AS day,
       ${USAGE_COUNTS},
       max(ts) FILTER (WHERE kind = 'INTENT') AS last_used,
       avg(duration_ms) FILTER (WHERE kind = 'RESULT') AS duration_ms_avg
     FROM (SELECT *, (ts AT TIME ZONE 'UTC')::date AS day FROM audit_events ${sql}) e
     GROUP BY GROUPING SETS ((token_id), (token_id, server, tool, capability), (token_id, day))
     ORDER BY token_id, grp, day, server, tool, capability`,
    args,
  );
  return rows;
}

/** What GET /v1/usage/monthly ran before: the rolled-up months plus raw rows grouped by month. */
export async function rawMonthlyUsage(db: pg.Pool, f: AuditFilters) {
  const { sql, args } = rawConditions(f);
  const { rows } = await db.query(
    `SELECT month::text AS month, token_id, token_type, project_id, server, tool, capability,
       sum(calls)::bigint AS calls, sum(allowed)::bigint AS allowed, sum(denied)::bigint AS denied, sum(results)::bigint AS results,
       sum(successes)::bigint AS successes, sum(errors)::bigint AS errors, max(last_at) AS last_at
     FROM (
       SELECT month, token_id, token_type, project_id, server, tool, capability, calls, allowed, denied, results, successes, errors, last_at FROM audit_usage_monthly
       UNION ALL
       SELECT date_trunc('month', ts AT TIME ZONE 'UTC')::date, token_id, token_type, project_id, server, tool, capability, ${USAGE_COUNTS}, max(ts)
       FROM audit_events ${sql}
       GROUP BY 1, 2, 3, 4, 5, 6, 7
     ) m
     GROUP BY month, token_id, token_type, project_id, server, tool, capability
     ORDER BY month, token_id, server, tool, capability`,
    args,
  );
  return rows;
}


function rawConditions(f: AuditFilters): { sql: string; args: unknown[] } {
  const list = ["token_id IS NOT NULL AND kind IN ('INTENT', 'RESULT')"];
  const args: unknown[] = [];
  const add = (cond: string, v: unknown) => list.push(cond.replace('?', `$${args.push(v)}`));
  if (f.token) add('token_id = ?', f.token);
  if (f.type) add('token_type = ?', f.type);
  if (f.project) add('project_id = ?', f.project);
  if (f.projects) add('project_id = ANY(?::text[])', [...f.projects]);
  if (f.server) add('server = ?', f.server);
  if (f.from) add('ts >= ?', f.from);
  if (f.to) add('ts < ?', f.to);
  return { sql: `WHERE ${list.join(' AND ')}`, args };
}

/** The rollup's rows against the raw rows (from `since` on: where the rollup starts) aggregated per hour the same way: equal, row for row. */
export async function rollupMismatches(db: pg.Pool, since?: Date): Promise<unknown[]> {
  const { rows } = await db.query(
    `WITH raw AS (
       SELECT date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour, token_id, token_type, project_id, server, tool, capability, ${USAGE_COUNTS},
         coalesce(sum(duration_ms) FILTER (WHERE kind = 'RESULT'), 0) AS duration_ms_sum, count(duration_ms) FILTER (WHERE kind = 'RESULT') AS duration_ms_count,
         max(ts) FILTER (WHERE kind = 'INTENT') AS last_used, max(ts) AS last_at
       FROM audit_events WHERE token_id IS NOT NULL AND kind IN ('INTENT', 'RESULT') AND ts >= coalesce($1::timestamptz, '-infinity') GROUP BY 1, 2, 3, 4, 5, 6, 7),
     rollup AS (
       SELECT hour, token_id, token_type, project_id, server, tool, capability, calls, allowed, denied, results, successes, errors,
         duration_ms_sum, duration_ms_count, last_used, last_at FROM audit_usage_hourly)
     (SELECT 'raw only' AS side, * FROM (TABLE raw EXCEPT ALL TABLE rollup) a)
     UNION ALL
     (SELECT 'rollup only', * FROM (TABLE rollup EXCEPT ALL TABLE raw) b)`,
    [since ?? null],
  );
  return rows;
}

