import type { Pool, PoolClient } from '../db/pool.js';
import { UNBOUNDED_QUERY_TIMEOUT_MS, withQueryTimeout } from '../db/query-timeout.js';
import { type Conditions, conditions } from '../db/where.js';
import { hashedContent } from './content.js';
import type { FollowCursor, SnapshotBounds } from './follow-cursor.js';
import { AUDIT_COLUMNS, type AuditRecord } from './record.js';

// The only code that writes SQL for the audit trail.

type Queryable = Pool | PoolClient;

const q = (name: string) => `"${name}"`;
const SELECT_COLUMNS = AUDIT_COLUMNS.map(([name]) => q(name)).join(', ');

// One INSERT per batch: the rows travel as one JSON array and json_populate_recordset turns it back into
// rows by column name. Each row's JSON is the hash chain's canonical content (hashedContent) plus hash and
// prev_hash, which the writer has already built to hash the row: nothing is serialised twice.
// ON CONFLICT makes replaying a spooled row that did reach Postgres a no-op (exactly once).
const INSERT_SQL = `INSERT INTO audit_events (${SELECT_COLUMNS})
SELECT ${SELECT_COLUMNS} FROM json_populate_recordset(NULL::audit_events, $1::json)
ON CONFLICT DO NOTHING`;

/** One row as JSON for the INSERT; `content` is hashedContent(row) when the caller has it. */
function rowJson(row: AuditRecord, content = hashedContent(row)): string {
  return `${content.slice(0, -1)},"hash":${JSON.stringify(row.hash)},"prev_hash":${JSON.stringify(row.prev_hash)}}`;
}

export interface AuditFilters {
  token?: string | undefined;
  type?: string | undefined;
  project?: string | undefined;
  /** Visibility of a project-limited operator (null: every project). */
  projects?: readonly string[] | null | undefined;
  session?: string | undefined;
  server?: string | undefined;
  tool?: string | undefined;
  decision?: string | undefined;
  code?: string | undefined;
  kind?: string | undefined;
  decisionId?: string | undefined;
  actor?: string | undefined;
  from?: Date | undefined;
  to?: Date | undefined;
}

/** A row's place in its chain's primary-key order (replica_id, seq, ts). */
export interface ChainCursor {
  seq: number;
  ts_key: string;
}

export type ChainRow = AuditRecord & ChainCursor;

export interface Keyset {
  ts: Date;
  id: string;
}

/** `args`: values already in the query, which the conditions' placeholders continue after. */
function filterConditions(f: AuditFilters, args: unknown[] = []): Conditions {
  const c = conditions(args);
  if (f.token) c.add('token_id = ?', f.token);
  if (f.type) c.add('token_type = ?', f.type);
  if (f.project) c.add('project_id = ?', f.project);
  if (f.projects) c.add('project_id = ANY(?::text[])', [...f.projects]);
  if (f.session) c.add('session_id = ?', f.session);
  if (f.server) c.add('server = ?', f.server);
  if (f.tool) c.add('tool = ?', f.tool);
  if (f.decision) c.add('decision = ?', f.decision);
  if (f.code) c.add('code = ?', f.code);
  if (f.kind) c.add('kind = ?', f.kind);
  if (f.decisionId) c.add('decision_id = ?', f.decisionId);
  if (f.actor) c.add('actor_id = ?', f.actor);
  if (f.from) c.add('ts >= ?', f.from);
  if (f.to) c.add('ts < ?', f.to);
  return c;
}

/**
 * One page of the listing (DESC, newest first, before `from`) or of the export (ASC, oldest first, after
 * `from`), keyset-paginated on (ts, id). An `actor` filter is read in two branches, each along its own
 * index, and merged: operator and system rows from audit_events_actor_idx (partial: migration 0020), and
 * agent-token rows, whose actor_id is always their token_id (src/audit/rows.ts), from
 * audit_events_token_idx. Each branch is cut at `limit` before the merge, so neither sorts more than a
 * page (a plain UNION ALL of two partitioned scans is appended, not merged: it sorted every row of a busy
 * token).
 */
function pageQuery(f: AuditFilters, dir: 'ASC' | 'DESC', limit: number, from?: Keyset): { text: string; values: unknown[] } {
  const c = filterConditions({ ...f, actor: undefined });
  if (from) c.list.push(`(ts, id) ${dir === 'DESC' ? '<' : '>'} (${c.arg(from.ts)}, ${c.arg(from.id)}::uuid)`);
  const tail = `ORDER BY ts ${dir}, id ${dir} LIMIT ${c.arg(limit)}`;
  if (!f.actor) return { text: `SELECT ${SELECT_COLUMNS} FROM audit_events ${c.where()} ${tail}`, values: c.args };
  const actor = c.arg(f.actor);
  const branch = (cond: string) => `(SELECT ${SELECT_COLUMNS} FROM audit_events WHERE ${[...c.list, cond].join(' AND ')} ${tail})`;
  return {
    text: `SELECT * FROM (${branch(`actor_id = ${actor} AND actor_type <> 'mcp_token'`)}
       UNION ALL ${branch(`token_id = ${actor} AND actor_id = ${actor} AND actor_type = 'mcp_token'`)}) a ${tail}`,
    values: c.args,
  };
}

/** A row of a follow page, with the transaction that inserted it and whether it continues the cursor's partial one. */
export type FollowRow = AuditRecord & { ingest_xid: string; from_partial: boolean };

/**
 * The rows `c` has not given that the transaction's snapshot sees (its xmax: `below`), matching `f`: the
 * rest of the partial transaction first, by id, then by (ingest_xid, id). Three branches, each along
 * audit_events_ingest_xid_idx (migration 0022) or the (ts, id) index for the partial one's (a range or a
 * list of ids, never the rows before them). Rows of another cluster (copied by a dump or logical
 * replication, whose xids mean nothing here) above `below` are not read.
 */
function followQuery(f: AuditFilters, c: FollowCursor, below: bigint, limit: number): { text: string; values: unknown[] } {
  const args: unknown[] = [];
  const branch = (cond: (arg: (v: unknown) => string) => string, first: boolean) => {
    const k = filterConditions(f, args);
    k.list.push(cond((v) => k.arg(v)));
    return `(SELECT ${SELECT_COLUMNS}, ingest_xid::text AS ingest_xid, ${first} AS from_partial FROM audit_events ${k.where()})`;
  };
  const parts = [branch((arg) => `ingest_xid >= ${arg(c.xmax.toString())}::bigint AND ingest_xid < ${arg(below.toString())}::bigint`, false)];
  if (c.xip.length > 0) parts.push(branch((arg) => `ingest_xid = ANY(${arg(c.xip.map(String))}::bigint[])`, false));
  const p = c.partial;
  if (p) parts.unshift(branch((arg) => `ingest_xid = ${arg(p.xid.toString())}::bigint AND id > ${arg(p.id)}::uuid`, true));
  args.push(limit);
  return { text: `SELECT * FROM (${parts.join(' UNION ALL ')}) r ORDER BY from_partial DESC, ingest_xid::bigint, id LIMIT $${args.length}`, values: args };
}

/** What every usage row counts (USAGE_COUNTS below). */
export interface UsageCounts {
  calls: number;
  allowed: number;
  denied: number;
  results: number;
  successes: number;
  errors: number;
}

export interface UsageGroupRow extends UsageCounts {
  grp: 'token' | 'operation' | 'day';
  token_id: string;
  token_type: string | null;
  project_id: string | null;
  server: string | null;
  tool: string | null;
  capability: string | null;
  day: string | null;
  last_used: Date | null;
  duration_ms_avg: number | null;
}

export interface MonthlyUsageRow extends UsageCounts {
  month: string;
  token_id: string | null;
  token_type: string | null;
  project_id: string | null;
  server: string | null;
  tool: string | null;
  capability: string | null;
  last_at: Date | null;
}

// Counting rules shared by usage, the retention rollup (migrations/0002_audit.sql) and the hourly rollup's
// trigger (0017): a RESULT whose status is "success" or "ok" is a success, any other status an error.
export const USAGE_COUNTS = `
  count(*) FILTER (WHERE kind = 'INTENT')::bigint AS calls,
  count(*) FILTER (WHERE kind = 'INTENT' AND decision = 'allow')::bigint AS allowed,
  count(*) FILTER (WHERE kind = 'INTENT' AND decision = 'deny')::bigint AS denied,
  count(*) FILTER (WHERE kind = 'RESULT')::bigint AS results,
  count(*) FILTER (WHERE kind = 'RESULT' AND result_status IN ('success', 'ok'))::bigint AS successes,
  count(*) FILTER (WHERE kind = 'RESULT' AND result_status NOT IN ('success', 'ok'))::bigint AS errors`;

const HOUR_MS = 3_600_000;

/** Half-open [from, to) on ts; an absent end is unbounded. */
export interface TsRange {
  from?: Date | undefined;
  to?: Date | undefined;
}

/**
 * [from, to) split at whole UTC hours: the whole hours inside it (read from audit_usage_hourly) and the
 * partial hours at its edges (read from raw rows). `hours` is null when the window holds no whole hour.
 */
export function splitAtHours(from: Date | undefined, to: Date | undefined): { hours: TsRange | null; edges: TsRange[] } {
  const firstHour = from && new Date(Math.ceil(from.getTime() / HOUR_MS) * HOUR_MS);
  const endHour = to && new Date(Math.floor(to.getTime() / HOUR_MS) * HOUR_MS);
  if (firstHour && endHour && firstHour >= endHour) return { hours: null, edges: [{ from, to }] };
  const edges: TsRange[] = [];
  if (from && firstHour && firstHour > from) edges.push({ from, to: firstHour });
  if (to && endHour && endHour < to) edges.push({ from: endHour, to });
  return { hours: { from: firstHour, to: endHour }, edges };
}

/**
 * splitAtHours for a rollup that holds only rows from `start` on (audit_usage_hourly_start: -infinity on a
 * new installation, the second whole hour after migration 0017 on an upgraded one): what lies before it
 * is read raw, as the partial hours are.
 */
export function splitForRollup(from: Date | undefined, to: Date | undefined, startMs: number): { hours: TsRange | null; edges: TsRange[] } {
  if (startMs === Number.NEGATIVE_INFINITY || (from && from.getTime() >= startMs)) return splitAtHours(from, to);
  if (startMs === Number.POSITIVE_INFINITY || (to && to.getTime() <= startMs)) return { hours: null, edges: [{ from, to }] };
  const start = new Date(startMs);
  const after = splitAtHours(start, to);
  return { hours: after.hours, edges: [{ from, to: start }, ...after.edges] };
}

/** Where audit_usage_hourly starts, in ms (rows before it are read raw): -Infinity on a new installation. */
async function rollupStart(db: Queryable): Promise<number> {
  // pg gives ±infinity as the numbers ±Infinity; no row (never expected) leaves everything to the raw rows.
  const { rows } = await db.query<{ starts_at: Date | number }>('SELECT starts_at FROM audit_usage_hourly_start');
  const at = rows[0]?.starts_at;
  if (at === undefined) return Number.POSITIVE_INFINITY;
  return typeof at === 'number' ? at : at.getTime();
}

/** The filters audit_usage_hourly can answer: its key's columns and the time range. */
function rollupAnswers(f: AuditFilters): boolean {
  return !(f.session || f.decision || f.code || f.kind || f.decisionId || f.actor);
}

const HOUR_COLUMNS =
  'hour, token_id, token_type, project_id, server, tool, capability, calls, allowed, denied, results, successes, errors, duration_ms_sum, duration_ms_count, last_used, last_at';

/**
 * Usage per UTC hour, token and operation in the filters' window, in HOUR_COLUMNS: the rollup's rows for
 * the whole hours, and raw rows counted the same way (the trigger's aggregate in
 * migrations/0017_audit_usage_hourly.sql) for the partial hours at the edges, so the sum is what
 * aggregating every raw row of the window gives. Its values are added to `args`.
 */
function hourRows(f: AuditFilters, args: unknown[], rollupStartMs: number): string {
  const { hours, edges } = rollupAnswers(f) ? splitForRollup(f.from, f.to, rollupStartMs) : { hours: null, edges: [{ from: f.from, to: f.to }] };
  const parts: string[] = [];
  if (hours) {
    // rollupAnswers: the filters left are columns of the rollup too; its window is in hours.
    const c = filterConditions({ ...f, from: undefined, to: undefined }, args);
    if (hours.from) c.add('hour >= ?', hours.from);
    if (hours.to) c.add('hour < ?', hours.to);
    parts.push(`SELECT ${HOUR_COLUMNS} FROM audit_usage_hourly ${c.where()}`);
  }
  if (edges.length > 0) {
    const c = filterConditions({ ...f, from: undefined, to: undefined }, args);
    c.list.push("token_id IS NOT NULL AND kind IN ('INTENT', 'RESULT')");
    const spans = edges.map((e) => [e.from && `ts >= ${c.arg(e.from)}`, e.to && `ts < ${c.arg(e.to)}`].filter(Boolean).join(' AND ') || 'true');
    c.list.push(`((${spans.join(') OR (')}))`);
    parts.push(
      `SELECT date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour, token_id, token_type, project_id, server, tool, capability, ${USAGE_COUNTS},
         coalesce(sum(duration_ms) FILTER (WHERE kind = 'RESULT'), 0) AS duration_ms_sum, count(duration_ms) FILTER (WHERE kind = 'RESULT') AS duration_ms_count,
         max(ts) FILTER (WHERE kind = 'INTENT') AS last_used, max(ts) AS last_at
       FROM audit_events ${c.where()}
       GROUP BY 1, 2, 3, 4, 5, 6, 7`,
    );
  }
  return parts.join('\n       UNION ALL\n       ');
}

const SUMS = `
  sum(calls)::bigint AS calls, sum(allowed)::bigint AS allowed, sum(denied)::bigint AS denied, sum(results)::bigint AS results,
  sum(successes)::bigint AS successes, sum(errors)::bigint AS errors`;

export const auditStore = {
  /** `contents[i]`, when given, is hashedContent(rows[i]) (the writer computed it to hash the row). */
  async insertBatch(db: Queryable, rows: readonly AuditRecord[], contents?: readonly string[]): Promise<number> {
    if (rows.length === 0) return 0;
    let json = '[';
    for (let i = 0; i < rows.length; i++) json += (i === 0 ? '' : ',') + rowJson(rows[i]!, contents?.[i]);
    // Named: each writer connection parses and plans the INSERT once, not once per batch.
    const res = await db.query({ name: 'audit_insert_batch', text: INSERT_SQL, values: [`${json}]`] });
    return res.rowCount ?? 0;
  },

  /**
   * The hashes stored at these chain positions, in audit_events or as a retention anchor (the spool's
   * replay checks that spooled rows continue a chain this database has).
   */
  async chainLinks(db: Queryable, positions: ReadonlyArray<{ replica_id: string; seq: number }>): Promise<Array<{ replica_id: string; seq: number; hash: string }>> {
    if (positions.length === 0) return [];
    const ids = positions.map((p) => p.replica_id);
    const seqs = positions.map((p) => p.seq);
    const { rows } = await db.query<{ replica_id: string; seq: string; hash: string }>(
      `WITH p(replica_id, seq) AS (SELECT * FROM unnest($1::text[], $2::bigint[]))
       SELECT e.replica_id, e.seq, e.hash FROM audit_events e JOIN p ON e.replica_id = p.replica_id AND e.seq = p.seq
       UNION ALL
       SELECT a.replica_id, a.seq, a.hash FROM audit_anchors a JOIN p ON a.replica_id = p.replica_id AND a.seq = p.seq`,
      [ids, seqs],
    );
    return rows.map((r) => ({ replica_id: r.replica_id, seq: Number(r.seq), hash: r.hash }));
  },

  /** Per chain: first and last seq and the number of rows (the verifier checks it walked that many). */
  async chainSummaries(db: Queryable): Promise<Array<{ replica_id: string; min_seq: number; max_seq: number; rows: number }>> {
    const { rows } = await db.query(
      'SELECT replica_id, min(seq) AS min_seq, max(seq) AS max_seq, count(*) AS rows FROM audit_events GROUP BY replica_id ORDER BY min(ts), replica_id',
    );
    return rows;
  },

  /** The hash of the row at one chain position (undefined: no such row; the first when a seq appears twice). */
  async hashAt(db: Queryable, replicaId: string, seq: number): Promise<string | undefined> {
    const { rows } = await db.query<{ hash: string }>('SELECT hash FROM audit_events WHERE replica_id = $1 AND seq = $2 ORDER BY ts LIMIT 1', [replicaId, seq]);
    return rows[0]?.hash;
  },

  /** Every retention anchor, with the cut it was made at and the anchored row's ts. */
  async anchors(db: Queryable): Promise<AnchorRow[]> {
    const { rows } = await db.query<AnchorRow>('SELECT replica_id, seq, hash, ts, cut_before FROM audit_anchors ORDER BY replica_id, seq');
    return rows;
  },

  /**
   * What the verifier checks anchors against: the `audit.retention` rows (the cut and the number of chains
   * each run anchored; written by the retention job after its transaction) and the oldest row left.
   */
  async retentionRecords(db: Queryable): Promise<{ runs: RetentionRunRow[]; oldest: Date | null }> {
    const { rows: runs } = await db.query<RetentionRunRow>(
      "SELECT replica_id, details->>'cutoff' AS cutoff, coalesce((details->>'chains_anchored')::bigint, 0) AS chains_anchored FROM audit_events WHERE kind = 'ADMIN' AND action = 'audit.retention' AND actor_type = 'system'",
    );
    const { rows } = await db.query<{ oldest: Date | null }>('SELECT min(ts) AS oldest FROM audit_events');
    return { runs, oldest: rows[0]?.oldest ?? null };
  },

  /**
   * One page of a chain for the verifier, in primary-key order (seq, ts), after the row at `after`, up to
   * `maxSeq`. Paging on the whole key visits every row, also a second row with a seq already seen (a
   * cursor on seq alone skipped it when it fell on a page edge). `ts_key` is the row's ts as Postgres
   * prints it, with its microseconds: a JavaScript Date keeps milliseconds only, and a cursor rounded down
   * would fetch the same row again.
   */
  async chainPage(db: Queryable, replicaId: string, after: ChainCursor | null, maxSeq: number, limit: number): Promise<ChainRow[]> {
    const { rows } = after
      ? await db.query<ChainRow>(
          `SELECT ${SELECT_COLUMNS}, ts::text AS ts_key FROM audit_events WHERE replica_id = $1 AND seq <= $2 AND (seq, ts) > ($4, $5::timestamptz) ORDER BY seq, ts LIMIT $3`,
          [replicaId, maxSeq, limit, after.seq, after.ts_key],
        )
      : await db.query<ChainRow>(`SELECT ${SELECT_COLUMNS}, ts::text AS ts_key FROM audit_events WHERE replica_id = $1 AND seq <= $2 ORDER BY seq, ts LIMIT $3`, [
          replicaId,
          maxSeq,
          limit,
        ]);
    return rows;
  },

  /** Newest first, keyset-paginated on (ts, id). */
  async list(db: Queryable, f: AuditFilters, limit: number, before?: Keyset): Promise<AuditRecord[]> {
    const { rows } = await db.query<AuditRecord>(pageQuery(f, 'DESC', limit, before));
    return rows;
  },

  /** Oldest first, for exports. */
  async exportPage(db: Queryable, f: AuditFilters, limit: number, after?: Keyset): Promise<AuditRecord[]> {
    const { rows } = await db.query<AuditRecord>(pageQuery(f, 'ASC', limit, after));
    return rows;
  },

  /**
   * The current snapshot's xmax and in-progress transactions (xip): in a REPEATABLE READ transaction, the
   * snapshot its reads see. Ids as text: they are 64-bit.
   */
  async snapshotBounds(db: Queryable): Promise<SnapshotBounds> {
    const { rows } = await db.query<{ xmax: string; xip: string[] }>(
      'SELECT pg_snapshot_xmax(s)::text AS xmax, ARRAY(SELECT x::text FROM pg_snapshot_xip(s) x) AS xip FROM pg_current_snapshot() s',
    );
    const r = rows[0]!;
    return { xmax: BigInt(r.xmax), xip: r.xip.map((x) => BigInt(x)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)) };
  },

  /** The rows of a follow page (followQuery), up to `limit`. */
  async followPage(db: Queryable, f: AuditFilters, c: FollowCursor, below: bigint, limit: number): Promise<FollowRow[]> {
    const { rows } = await db.query<FollowRow>(followQuery(f, c, below, limit));
    return rows;
  },

  async findIntent(db: Queryable, decisionId: string): Promise<AuditRecord | undefined> {
    const { rows } = await db.query<AuditRecord>(`SELECT ${SELECT_COLUMNS} FROM audit_events WHERE decision_id = $1 AND kind = 'INTENT' ORDER BY ts LIMIT 1`, [decisionId]);
    return rows[0];
  },

  /**
   * Per token: totals, per operation (server/tool/capability) and per UTC day, in one pass over the
   * window's hours (hourRows): a 7-day window is some thousands of rollup rows, not every raw row.
   */
  async usage(db: Queryable, f: AuditFilters): Promise<UsageGroupRow[]> {
    const args: unknown[] = [];
    const start = await rollupStart(db);
    const { rows } = await db.query<UsageGroupRow>(
      `SELECT CASE WHEN grouping(server, tool, capability) = 0 THEN 'operation' WHEN grouping(day) = 0 THEN 'day' ELSE 'token' END AS grp,
         token_id, max(token_type) AS token_type, max(project_id) AS project_id, server, tool, capability, day::text AS day,
         ${SUMS},
         max(last_used) AS last_used,
         sum(duration_ms_sum) / nullif(sum(duration_ms_count), 0)::double precision AS duration_ms_avg
       FROM (SELECT *, (hour AT TIME ZONE 'UTC')::date AS day FROM (${hourRows(f, args, start)}) h) e
       GROUP BY GROUPING SETS ((token_id), (token_id, server, tool, capability), (token_id, day))
       ORDER BY token_id, grp, day, server, tool, capability`,
      args,
    );
    return rows;
  },

  /** Monthly usage: rolled-up months (raw rows gone) plus the hours of months still raw, each row counted once. */
  async monthlyUsage(db: Queryable, f: AuditFilters): Promise<MonthlyUsageRow[]> {
    const args: unknown[] = [];
    const hours = hourRows(f, args, await rollupStart(db));
    // The rolled-up months' conditions number their values after the hours'.
    // The usage filters (token, type, project, server) are columns of the monthly rollup; its window is in months.
    const rolled = filterConditions({ ...f, from: undefined, to: undefined }, args);
    // Retention rolls up every INTENT and RESULT, also those of no token (a refused unknown key); usage
    // counts tokens' calls only, and a month must not change when retention rolls it up.
    rolled.list.push('token_id IS NOT NULL');
    if (f.from) rolled.add("month >= date_trunc('month', ?::timestamptz AT TIME ZONE 'UTC')::date", f.from);
    // A month is in when it starts (at 00:00 UTC) before `to`; a bare date compared with a timestamptz
    // would be read in the server's time zone.
    if (f.to) rolled.add("(month::timestamp AT TIME ZONE 'UTC') < ?::timestamptz", f.to);
    const { rows } = await db.query<MonthlyUsageRow>(
      `SELECT month::text AS month, token_id, token_type, project_id, server, tool, capability, ${SUMS}, max(last_at) AS last_at
       FROM (
         SELECT month, token_id, token_type, project_id, server, tool, capability, calls, allowed, denied, results, successes, errors, last_at
         FROM audit_usage_monthly ${rolled.where()}
         UNION ALL
         SELECT date_trunc('month', hour AT TIME ZONE 'UTC')::date, token_id, token_type, project_id, server, tool, capability,
           calls, allowed, denied, results, successes, errors, last_at
         FROM (${hours}) h
       ) m
       GROUP BY month, token_id, token_type, project_id, server, tool, capability
       ORDER BY month, token_id, server, tool, capability`,
      args,
    );
    return rows;
  },

  /**
   * Rows in the default partition: they arrived for a month that had no partition (no replica ran to
   * create it ahead, or a clock far off), and while they are there that month's partition cannot be
   * created. Counted up to 100,001; oldest and newest by the partition's ts index.
   */
  async defaultPartitionRows(db: Queryable): Promise<{ rows: number; oldest: Date | null; newest: Date | null }> {
    const { rows } = await db.query<{ rows: number; oldest: Date | null; newest: Date | null }>(
      `SELECT (SELECT count(*)::int FROM (SELECT 1 FROM audit_events_default LIMIT 100001) s) AS rows,
              (SELECT min(ts) FROM audit_events_default) AS oldest, (SELECT max(ts) FROM audit_events_default) AS newest`,
    );
    return rows[0] ?? { rows: 0, oldest: null, newest: null };
  },

  async ensurePartitions(db: Queryable, from: Date, months: number): Promise<number> {
    const { rows } = await db.query<{ created: number }>('SELECT audit_ensure_partitions($1, $2) AS created', [from, months]);
    return rows[0]?.created ?? 0;
  },

  async applyRetention(db: Queryable, cutoff: Date): Promise<RetentionResult> {
    // Rolls up and drops whole months: may run for minutes. A client-side timeout would leave it running
    // on the server while the caller, believing it failed, skips the audit row of what it removed.
    const { rows } = await db.query<{ result: RetentionResult }>(withQueryTimeout({ text: 'SELECT audit_apply_retention($1) AS result', values: [cutoff] }, UNBOUNDED_QUERY_TIMEOUT_MS));
    return rows[0]!.result;
  },

  async countOlderThan(db: Queryable, cutoff: Date): Promise<number> {
    const { rows } = await db.query<{ n: number }>('SELECT count(*) AS n FROM audit_events WHERE ts < $1', [cutoff]);
    return rows[0]?.n ?? 0;
  },
};

export interface AnchorRow {
  replica_id: string;
  seq: number;
  hash: string;
  ts: Date;
  cut_before: Date;
}

export interface RetentionRunRow {
  replica_id: string;
  /** details.cutoff as the retention function returned it (ISO 8601). */
  cutoff: string | null;
  chains_anchored: number;
}

export interface RetentionResult {
  cutoff: string;
  rolled_up_groups: number;
  chains_anchored: number;
  partitions_dropped: string[];
  rows_removed: number;
}
