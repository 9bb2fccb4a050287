// Benchmark of GET /v1/usage's query: the raw aggregation it ran before migration 0017 (every INTENT and
// RESULT row of the window, GROUPING SETS) against the current one (audit_usage_hourly for the whole
// hours, raw rows for the partial hours at the edges), on a scratch database of the local Postgres that is
// created, migrated and dropped again. It also times migration 0017 on a full trail (it does not backfill),
// the aggregate that would fill the rollup from the stored rows (what a backfill inside the migration
// cost, and why there is none), and the trigger's cost on writer-sized INSERTs.
//
//   npx tsx scripts/bench/audit-usage.ts [--rows 3000000] [--days 8] [--tokens 50] [--database rv_usage_scale]
//
// `--rows` rows (~1 kB each, as INTENT/RESULT rows with arguments are) spread evenly over the last `--days`
// days, written by a database at migration 0016 (no rollup); then 0017 is applied (timed), and the rollup
// is filled as if it had run from the start (starts_at -infinity, the trigger's aggregate over the stored
// rows, timed).
// The usage window is 7 days ending 17 min 23 s before the newest row, so both edges are partial hours.
// 50-row INSERTs through audit_events (the writer's batches) are timed before and after 0017, with
// synchronous_commit off so that the disk's fsync time does not hide the statement's own cost.

import { cp, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { auditStore } from '../../src/audit/store.js';
import { MIGRATIONS_DIR, migrate } from '../../src/db/migrate.js';
import { createPool } from '../../src/db/pool.js';
import { scratchDatabase } from '../scratch-db.js';

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '3000000' },
    days: { type: 'string', default: '8' },
    tokens: { type: 'string', default: '50' },
    database: { type: 'string', default: 'rv_usage_scale' },
    'pg-url': { type: 'string', default: process.env['BENCH_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/postgres' },
  },
});
const ROWS = Number(args.rows);
const DAYS = Number(args.days);
const TOKENS = Number(args.tokens);
const DB = args.database;
const scratch = scratchDatabase(args['pg-url'], DB);
const dbUrl = scratch.url;
const DAY = 86_400_000;
const END = Date.parse('2026-11-30T12:00:00Z');
const START = END - DAYS * DAY;
const TO = new Date(END - (17 * 60 + 23) * 1000);
const FROM = new Date(TO.getTime() - 7 * DAY);
const BATCHES = 1_000;

/** The trigger's aggregate over every stored row (migrations/0017_audit_usage_hourly.sql), in one statement. */
const FILL_ROLLUP = `INSERT INTO audit_usage_hourly (hour, token_id, token_type, project_id, server, tool, capability,
    calls, allowed, denied, results, successes, errors, duration_ms_sum, duration_ms_count, last_used, last_at)
  SELECT date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', token_id, token_type, project_id, server, tool, capability,
    count(*) FILTER (WHERE kind = 'INTENT'), count(*) FILTER (WHERE kind = 'INTENT' AND decision = 'allow'),
    count(*) FILTER (WHERE kind = 'INTENT' AND decision = 'deny'), count(*) FILTER (WHERE kind = 'RESULT'),
    count(*) FILTER (WHERE kind = 'RESULT' AND result_status IN ('success', 'ok')),
    count(*) FILTER (WHERE kind = 'RESULT' AND result_status NOT IN ('success', 'ok')),
    coalesce(sum(duration_ms) FILTER (WHERE kind = 'RESULT'), 0), count(duration_ms) FILTER (WHERE kind = 'RESULT'),
    max(ts) FILTER (WHERE kind = 'INTENT'), max(ts)
  FROM audit_events WHERE token_id IS NOT NULL AND kind IN ('INTENT', 'RESULT')
  GROUP BY 1, 2, 3, 4, 5, 6, 7`;

/** GET /v1/usage's query before migration 0017. */
const OLD_USAGE = `SELECT CASE WHEN grouping(server, tool, capability) = 0 THEN 'operation' WHEN grouping(day) = 0 THEN 'day' ELSE 'token' END AS grp,
    token_id, max(token_type) AS token_type, max(project_id) AS project_id, server, tool, capability, day::text AS day,
    count(*) FILTER (WHERE kind = 'INTENT')::bigint AS calls,
    count(*) FILTER (WHERE kind = 'INTENT' AND decision = 'allow')::bigint AS allowed,
    count(*) FILTER (WHERE kind = 'INTENT' AND decision = 'deny')::bigint AS denied,
    count(*) FILTER (WHERE kind = 'RESULT')::bigint AS results,
    count(*) FILTER (WHERE kind = 'RESULT' AND result_status IN ('success', 'ok'))::bigint AS successes,
    count(*) FILTER (WHERE kind = 'RESULT' AND result_status NOT IN ('success', 'ok'))::bigint AS errors,
    max(ts) FILTER (WHERE kind = 'INTENT') AS last_used,
    avg(duration_ms) FILTER (WHERE kind = 'RESULT') AS duration_ms_avg
  FROM (SELECT *, (ts AT TIME ZONE 'UTC')::date AS day FROM audit_events
        WHERE ts >= $1 AND ts < $2 AND token_id IS NOT NULL AND kind IN ('INTENT', 'RESULT')) e
  GROUP BY GROUPING SETS ((token_id), (token_id, server, tool, capability), (token_id, day))
  ORDER BY token_id, grp, day, server, tool, capability`;

/** Rows `from`..`from + n` of the synthetic trail (seq = i), evenly over [START, END). */
async function insertRows(c: pg.Client | pg.Pool, from: number, n: number): Promise<void> {
  await c.query(
    `INSERT INTO audit_events (id, ts, replica_id, seq, kind, decision_id, actor_type, token_id, token_type, project_id, environment,
       session_id, server, tool, capability, arguments, decision, code, message, result_status, duration_ms, result_bytes, rows,
       client_name, client_version, user_agent, ip, prev_hash, hash)
     SELECT gen_random_uuid(), $3::timestamptz + ($4::bigint * interval '1 millisecond') * ((i % $5)::double precision / $5),
       'bench-replica', i, CASE WHEN i % 2 = 0 THEN 'INTENT' ELSE 'RESULT' END, md5((i / 2)::text), 'mcp_token', 'tok-' || (i / 2 % $6),
       'rw', 'proj-' || (i / 2 % $6 % 5), 'development', 's-' || (i % 500),
       (ARRAY['filesystem', 'postgres', 'github'])[i / 2 % 3 + 1], (ARRAY['read_file', 'write_file', 'query', 'search'])[i / 2 % 4 + 1], 'write',
       jsonb_build_object('path', 'docs/page-' || i || '.md', 'content', repeat('A paragraph of documentation text. ', 14)),
       CASE WHEN i / 2 % 10 = 0 THEN 'deny' ELSE 'allow' END, 'OK', 'allowed', CASE WHEN i % 20 = 1 THEN 'error' ELSE 'success' END,
       (i % 97) + 0.5, 2048, 1, 'claude-ai', '0.9.2', 'Claude/0.9.2', '127.0.0.1', md5((i - 1)::text), md5(i::text)
     FROM generate_series($1::bigint, $1::bigint + $2::bigint - 1) AS i`,
    [from, n, new Date(START), END - START, ROWS, TOKENS],
  );
}

/** Milliseconds per INSERT of 50 rows (`BATCHES` of them, seq past the trail's, ts within it). */
async function writerBatches(c: pg.Client, firstSeq: number): Promise<number> {
  await c.query('SET synchronous_commit = off');
  const t = performance.now();
  for (let b = 0; b < BATCHES; b++) await insertRows(c, firstSeq + b * 50, 50);
  return (performance.now() - t) / BATCHES;
}

async function timed<T>(f: () => Promise<T>, runs = 3): Promise<{ ms: number; value: T }> {
  let best = Number.POSITIVE_INFINITY;
  let value: T | undefined;
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    value = await f();
    best = Math.min(best, performance.now() - t);
  }
  return { ms: Math.round(best), value: value as T };
}

async function main(): Promise<Record<string, unknown>> {
  await scratch.create();
  const before = await mkdtemp(join(tmpdir(), 'ks-usage-migrations-'));
  const pool = createPool(dbUrl, { max: 1 });
  const c = new pg.Client({ connectionString: dbUrl });
  try {
    // The installation before the upgrade: migrations up to 0016, no rollup.
    for (const f of await readdir(MIGRATIONS_DIR)) if (/^00(0\d|1[0-6])_/.test(f)) await cp(join(MIGRATIONS_DIR, f), join(before, f));
    await migrate(pool, before);
    await c.connect();
    await c.query('SELECT audit_ensure_partitions($1, 3)', [new Date(START)]);
    for (let i = 1; i <= ROWS; i += 500_000) await insertRows(c, i, Math.min(500_000, ROWS - i + 1));
    await c.query('VACUUM ANALYZE audit_events');
    const insertBefore = await writerBatches(c, 10_000_000);

    const t = performance.now();
    await migrate(pool);
    const migrationMs = performance.now() - t;
    // The rollup of an installation that ran 0017 from the start: every stored row in it.
    const t2 = performance.now();
    await c.query("UPDATE audit_usage_hourly_start SET starts_at = '-infinity'");
    await c.query(FILL_ROLLUP);
    const fillMs = performance.now() - t2;
    await c.query('VACUUM ANALYZE audit_usage_hourly');
    const insertAfter = await writerBatches(c, 20_000_000);

    const windowRows = (await c.query<{ n: string }>("SELECT count(*) AS n FROM audit_events WHERE ts >= $1 AND ts < $2 AND kind IN ('INTENT', 'RESULT')", [FROM, TO])).rows[0]!.n;
    const hourly = (await c.query<{ n: string }>('SELECT count(*) AS n FROM audit_usage_hourly WHERE hour >= $1 AND hour < $2', [FROM, TO])).rows[0]!.n;
    const old = await timed(async () => (await c.query(OLD_USAGE, [FROM, TO])).rows);
    const rollup = await timed(() => auditStore.usage(c as unknown as pg.Pool, { from: FROM, to: TO }));
    const wholeHours = { from: new Date(Math.ceil(FROM.getTime() / 3_600_000) * 3_600_000), to: new Date(Math.ceil(TO.getTime() / 3_600_000) * 3_600_000) };
    const aligned = await timed(() => auditStore.usage(c as unknown as pg.Pool, wholeHours));
    const monthly = await timed(() => auditStore.monthlyUsage(c as unknown as pg.Pool, { from: FROM, to: TO }));
    if (JSON.stringify(old.value) !== JSON.stringify(rollup.value)) console.warn('the two queries disagree (floating-point averages?)');
    return {
      rows: ROWS,
      window_rows: Number(windowRows),
      hourly_rows_in_window: Number(hourly),
      migration_ms: Math.round(migrationMs),
      fill_ms: Math.round(fillMs),
      fill_ms_per_million_rows: Math.round((fillMs / ROWS) * 1e6),
      old_usage_ms: old.ms,
      old_usage_us_per_row: Math.round((old.ms / Number(windowRows)) * 1e4) / 10,
      new_usage_ms: rollup.ms,
      new_usage_whole_hours_ms: aligned.ms,
      new_monthly_ms: monthly.ms,
      insert_50_rows_ms_before: Math.round(insertBefore * 100) / 100,
      insert_50_rows_ms_after: Math.round(insertAfter * 100) / 100,
    };
  } finally {
    await c.end().catch(() => {});
    await pool.end();
    await rm(before, { recursive: true, force: true });
    await scratch.drop();
  }
}

console.table([await main()]);
